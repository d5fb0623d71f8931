"""What the issuer signs for a cluster on each step of a root rotation (docs/rotation.md).

| step      | signed by | root-cert.pem    | cross certificate     |
|-----------|-----------|------------------|-----------------------|
| `add`     | old CA    | old + new root   | new root by old root  |
| `move`    | new CA    | old + new root   | new root by old root  |
| `drop`    | new CA    | new root         | new root by old root  |
| `back`    | old CA    | old + new root   | new root by old root  |
| `undo`    | old CA    | old root         | none                  |
| `reissue` | new CA    | the (same) root  | none                  |

Pure and synchronous (the clock is a parameter). The cross certificate is made with the old
root's own key when the old Secret holds the root itself; when the old CA is an intermediate the
new Secret must carry one in `cross-signed.pem` (made by whoever holds the old root's key), and
only a certificate for exactly the new root's subject and key, issued by the old root, is taken.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from shared.api import reasons
from shared.api.rotations import Step
from shared.controller.policy import Finding
from shared.pki import SigningCA, SigningRefused, cross_sign, vouched_roots

__all__ = ["CROSS_SIGNED_FIELD", "StepCA", "cross_certificate", "signs_with_new_ca", "step_ca"]

CROSS_SIGNED_FIELD = "cross-signed.pem"
"""The new Secret's field holding the cross certificate, when the old CA is an intermediate."""

_NEW_CA = frozenset({Step.MOVE, Step.DROP, Step.REISSUE})
_BOTH_ROOTS = frozenset({Step.ADD, Step.MOVE, Step.BACK})
_CROSSED = frozenset({Step.ADD, Step.MOVE, Step.DROP, Step.BACK})


def signs_with_new_ca(step: Step) -> bool:
    """Whether `step` signs with the rotation's new CA (else with the declared, old one)."""
    return step in _NEW_CA


@dataclass(frozen=True, slots=True)
class StepCA:
    """The CA that signs, the roots sent as root-cert.pem, the cross certificate (PEM) sent."""

    ca: SigningCA
    roots_pem: bytes
    cross_signed_pem: str | None


def _pem(*certificates: x509.Certificate) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certificates)


def step_ca(
    step: Step, *, old: SigningCA, new: SigningCA, cross: x509.Certificate | None
) -> StepCA | Finding:
    """The table above; a Finding when the step needs a cross certificate there is none of."""
    ca = new if step in _NEW_CA else old
    if step is Step.REISSUE:
        return StepCA(ca, _pem(ca.root), None)
    if step in _BOTH_ROOTS:
        roots = _pem(old.root, new.root)
    else:
        roots = _pem(new.root if step is Step.DROP else old.root)
    if step not in _CROSSED:
        return StepCA(ca, roots, None)
    if cross is None:
        return Finding(
            reasons.SIGNING_SECRET_INVALID,
            "the rotation has no cross certificate for the new root: the old CA is an "
            f"intermediate, so the new Secret must hold one in {CROSS_SIGNED_FIELD} "
            "(docs/rotation.md)",
        )
    return StepCA(ca, roots, _pem(cross).decode())


def cross_certificate(
    old: SigningCA, new: SigningCA, new_data: Mapping[str, bytes], *, now: datetime
) -> x509.Certificate | Finding:
    """The cross certificate for `new`'s root by `old`'s root: made when `old` is the root
    itself, else taken from `new_data[cross-signed.pem]` if the old root vouches for it."""
    if len(old.chain) == 1:
        try:
            return cross_sign(new.root, by=old, now=now)
        except SigningRefused as exc:
            return Finding(reasons.SIGNING_SECRET_INVALID, f"cross-signing: {exc.message}")
    given = new_data.get(CROSS_SIGNED_FIELD)
    if not given:
        return Finding(
            reasons.SIGNING_SECRET_INVALID,
            f"the old CA is an intermediate: the new Secret needs {CROSS_SIGNED_FIELD}, the new "
            "root cross-signed by the old root (docs/rotation.md)",
        )
    try:
        candidates = x509.load_pem_x509_certificates(given)
    except ValueError:
        return Finding(reasons.SIGNING_SECRET_INVALID, f"{CROSS_SIGNED_FIELD} is not PEM")
    for candidate in candidates:
        vouched = vouched_roots([new.root], pinned=[old.root], cross_signed=[candidate], now=now)
        if vouched.trusted:
            return candidate
    return Finding(
        reasons.SIGNING_SECRET_INVALID,
        f"{CROSS_SIGNED_FIELD} of the new Secret holds no certificate of the new root signed by "
        "the old root and valid now",
    )
