"""Cross-signing a new root, and deciding which roots a pinned trust vouches for.

A root rotation (docs/rotation.md) must teach every agent a new root without letting anyone who
can publish on the bus do the same. The authority comes from the root the agent already pins: the
issuer, holding the old root's key, signs a **cross certificate** for the new root, a CA
certificate with the new root's subject and public key, issued by the old root. An agent that
receives a bundle holding the new root accepts it only if a cross certificate for exactly that
subject and key is directly signed by a root it pins, and valid now (`vouched_roots`). The new
root's own self-signature proves nothing (anyone can make one); the cross certificate does.

- `cross_sign(root, by=, now=)` makes the cross certificate. ``by`` must be a self-signed root
  (a `SigningCA` whose chain is just itself): a cross certificate signed by an intermediate would
  need that intermediate's pathLen to allow a CA below it, and the agent would need its chain;
  keeping it one level makes the check one signature. It lives no longer than either root.
- `vouched_roots(roots, pinned=, cross_signed=, now=)` splits ``roots`` into those the pins vouch
  for (pinned themselves, or cross-signed by a pinned root) and those they do not.

Synchronous and pure; the clock is the caller's ``now``. Deliberately not here: chains of cross
certificates (a root vouched for by a root that is itself only vouched for), revocation.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from cryptography import x509

from shared.pki.authority import CA_KEY_USAGE, SigningCA
from shared.pki.chains import verify_path
from shared.pki.errors import ChainInvalid, SigningRefused
from shared.pki.pem import describe_certificate, spki_of

__all__ = ["Vouched", "cross_sign", "vouched_roots"]


def cross_sign(root: x509.Certificate, *, by: SigningCA, now: dt.datetime) -> x509.Certificate:
    """A certificate for ``root``'s subject and key, issued and signed by the root ``by``."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    if len(by.chain) != 1:
        raise SigningRefused(
            "PathLenExceeded",
            f"cross-signing needs the old root's own key; {describe_certificate(by.cert)} is an "
            "intermediate: give the cross certificate in the new signing Secret instead "
            "(docs/rotation.md)",
        )
    not_before = max(root.not_valid_before_utc, by.valid_from)
    not_after = min(root.not_valid_after_utc, by.valid_until)
    if not_after <= now:
        raise SigningRefused(
            "SignerExpired",
            f"{describe_certificate(root)} and {describe_certificate(by.cert)} overlap only "
            f"until {not_after.isoformat()}",
        )
    try:
        constraints = root.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        constraints = x509.BasicConstraints(ca=True, path_length=None)
    builder = (
        x509.CertificateBuilder()
        .subject_name(root.subject)
        .issuer_name(by.cert.subject)
        .public_key(root.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=constraints.path_length), True)
        .add_extension(CA_KEY_USAGE, critical=True)
        .add_extension(_subject_key_identifier(root), critical=False)
        .add_extension(by.authority_key_identifier, critical=False)
    )
    return builder.sign(by.key, by.signature_hash)


@dataclass(frozen=True, slots=True)
class Vouched:
    """``roots`` split: ``trusted`` (pinned, or cross-signed by a pinned root) and the rest."""

    trusted: tuple[x509.Certificate, ...]
    untrusted: tuple[x509.Certificate, ...]


def vouched_roots(
    roots: Iterable[x509.Certificate],
    *,
    pinned: Sequence[x509.Certificate],
    cross_signed: Sequence[x509.Certificate],
    now: dt.datetime,
) -> Vouched:
    """Which of ``roots`` the ``pinned`` roots vouch for at ``now``, through ``cross_signed``."""
    trusted: list[x509.Certificate] = []
    untrusted: list[x509.Certificate] = []
    for root in roots:
        ok = root in pinned or any(
            _vouches(cross, root, pinned=pinned, now=now) for cross in cross_signed
        )
        (trusted if ok else untrusted).append(root)
    return Vouched(tuple(trusted), tuple(untrusted))


def _vouches(
    cross: x509.Certificate,
    root: x509.Certificate,
    *,
    pinned: Sequence[x509.Certificate],
    now: dt.datetime,
) -> bool:
    if cross.subject != root.subject or spki_of(cross) != spki_of(root):
        return False
    for anchor in pinned:
        if anchor.subject != cross.issuer:
            continue
        try:
            verify_path([cross, anchor], now=now)
        except ChainInvalid:
            continue
        return True
    return False


def _subject_key_identifier(root: x509.Certificate) -> x509.SubjectKeyIdentifier:
    """The root's own SKI, so that what the new root signs (AKI = its SKI) matches either form."""
    try:
        return root.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    except x509.ExtensionNotFound:
        return x509.SubjectKeyIdentifier.from_public_key(root.public_key())
