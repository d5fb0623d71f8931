"""The bundle check, run once per bundle content and off the event loop.

`shared.pki.check_bundle` of an RSA-4096 bundle takes ~0.4-0.5 s, nearly all of it
`cryptography` validating the private key as it loads. The handler checks a bundle before
writing it, and every reconcile pass checks the Secret again (it may have been edited), so the
same bytes were checked several times per issuance, each time blocking the event loop
(measured by bench/e2e.py). Here the result is kept per content digest (the four PEMs, the
declared hosts and org), and the check runs in a thread.

What a cached result still verifies each time: the validity window against `now` (a bundle that
passed an hour ago may have expired since); anything else about fixed bytes cannot change.
Failures are not cached: an invalid bundle is checked again, and its error is the check's own.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
from collections import OrderedDict
from collections.abc import Sequence
from datetime import datetime

from shared.pki import Bundle, BundleInfo, check_bundle

_KEPT = 256
"""Results kept: a few per IssuedCertificate (current bundle, the one being written)."""


class BundleChecks:
    def __init__(self) -> None:
        self._passed: OrderedDict[bytes, BundleInfo] = OrderedDict()
        self._lock = threading.Lock()  # the check runs in worker threads

    async def check(
        self, bundle: Bundle, *, hosts: Sequence[str], org: str, now: datetime
    ) -> BundleInfo:
        """`check_bundle`'s result; raises what it raises (`BundleInvalid`, `PkiError`)."""
        digest = _digest(bundle, hosts, org)
        with self._lock:
            info = self._passed.get(digest)
            if info is not None:
                self._passed.move_to_end(digest)
        if info is not None and info.not_before <= now < info.not_after:
            return info
        # Not seen, or outside its validity now: the full check, which raises the right error.
        info = await asyncio.to_thread(check_bundle, bundle, hosts=hosts, org=org, now=now)
        with self._lock:
            self._passed[digest] = info
            while len(self._passed) > _KEPT:
                self._passed.popitem(last=False)
        return info


def _digest(bundle: Bundle, hosts: Sequence[str], org: str) -> bytes:
    h = hashlib.sha256()
    for part in (
        bundle.ca_cert_pem,
        bundle.ca_key_pem,
        bundle.cert_chain_pem,
        bundle.root_cert_pem,
        "\0".join(hosts).encode(),
        org.encode(),
    ):
        h.update(len(part).to_bytes(8, "big"))
        h.update(part)
    return h.digest()
