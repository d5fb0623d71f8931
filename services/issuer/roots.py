"""Hard cuts are not silent: the root each signing Secret was last used with, remembered.

A signing Secret replaced in place by a CA under another root would have every cluster re-issue
under the new root at once, each one distrusting the others' workloads until all have: the
outage a `CertificateRotation` avoids (docs/rotation.md). So the issuer remembers, per Secret, the
fingerprint of the root it last signed under (KV bucket `meshtrust-roots`, key
`<namespace>.<name>`),
and refuses (`SigningRootChanged`) to sign under another root unless a rotation covers the Secret
or the Secret's annotation `meshtrust.io/accept-root-fingerprint` names the new root (the
emergency escape: the hard cut, accepted explicitly).

`root_changed` is the pure decision; `RootMemory` the bucket and an in-process cache (the
bucket is read once per Secret and process, written only when the root changes).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from shared.api import reasons
from shared.api.meta import ObjectKey, metadata
from shared.bus import Bucket, RevisionMismatch
from shared.controller.policy import Finding
from shared.runtime import TransientError, get_logger

__all__ = [
    "ACCEPT_ROOT_ANNOTATION",
    "ROOTS_BUCKET",
    "ROOTS_DESCRIPTION",
    "RootMemory",
    "root_changed",
    "roots_key",
]

log = get_logger(__name__)

ACCEPT_ROOT_ANNOTATION = "meshtrust.io/accept-root-fingerprint"
ROOTS_BUCKET = "meshtrust-roots"
ROOTS_DESCRIPTION = "the root each signing Secret last signed under (hard cuts refused)"


def roots_key(secret: ObjectKey) -> str:
    return f"{secret.namespace}.{secret.name}"


def root_changed(
    secret: ObjectKey, remembered: str | None, current: str, raw: Mapping[str, Any] | None
) -> Finding | None:
    """Why the Secret may not sign under root `current` (SHA-256 hex), or None."""
    if remembered is None or remembered == current:
        return None
    accepted = metadata(raw or {}).annotations.get(ACCEPT_ROOT_ANNOTATION, "")
    if accepted.strip().lower().replace(":", "") == current:
        return None
    return Finding(
        reasons.SIGNING_ROOT_CHANGED,
        f"signingCertificateSecret {secret.namespace}/{secret.name} now ends at another root "
        f"(sha256 {current[:16]}..., was {remembered[:16]}...): signing under it would make "
        "every cluster distrust the others until all re-issued. Rotate instead: put the new CA "
        "in another Secret and run `meshtrust rotate start NAME --from "
        f"{secret.namespace}/{secret.name} --to NEW` (docs/rotation.md); or, to cut over at "
        f"once, annotate the Secret {ACCEPT_ROOT_ANNOTATION}={current}",
    )


class RootMemory:
    """The remembered root of each signing Secret (`meshtrust-roots`)."""

    def __init__(self, bucket: Bucket) -> None:
        self._issued = bucket
        self._known: dict[ObjectKey, str] = {}

    async def remembered(self, secret: ObjectKey) -> str | None:
        """The Secret's remembered root; None when unknown, or when the bucket cannot be read
        (logged: a missing bucket, not provisioned yet, must not stop the signing)."""
        if secret in self._known:
            return self._known[secret]
        try:
            entry = await self._issued.get(roots_key(secret))
        except TransientError as exc:
            log.warning("remembered root unreadable; hard cuts not checked", error=str(exc))
            return None
        if entry is None:
            return None
        value = entry.value.decode(errors="replace")
        self._known[secret] = value
        return value

    async def remember(self, secret: ObjectKey, root: str) -> None:
        """Note `root` as the Secret's (a write only when it changed)."""
        if self._known.get(secret) == root:
            return
        key = roots_key(secret)
        try:
            entry = await self._issued.get(key)
            if entry is None:
                await self._issued.create(key, root.encode())
            elif entry.value != root.encode():
                await self._issued.update(key, root.encode(), last=entry.revision)
        except RevisionMismatch:
            self._known.pop(secret, None)  # another replica wrote it: read it again next time
            return
        except TransientError as exc:
            log.warning("root not remembered", error=str(exc))
            return
        self._known[secret] = root
