"""Loading signing CAs from Secrets, and signing authorised CSRs.

`SigningCAs.load(secret)` turns a signing Secret (as the API returns it) into a `SigningCA` or a
`Finding` (why it cannot sign); a CA that loaded is cached by the Secret's uid and
resourceVersion, so a change of the Secret's content (a rotation) is always seen and an
unchanged Secret is parsed once.
`sign(...)` signs an authorised CSR with the declaration's names and the clamped TTL.

Both are synchronous and CPU-bound (chain validation; one private-key operation per signature,
~9 ms with an RSA-4096 CA): the handlers run them in the issuer's signing executor.
`read_signing_secret(...)` is the one read of a signing Secret from the API, shared by the
reconciler and the CSR handler (the only I/O here).
The signing key lives in `SigningCA.key` only; no message here names more than fingerprints.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from cryptography import x509

from services.issuer.policies import SigningState, forbidden_secret, scope_problem
from shared.api import reasons
from shared.api.meta import Obj, ObjectKey, metadata
from shared.api.v1alpha2 import IssuedCertificate as Declaration
from shared.controller.policy import Finding
from shared.k8s import Forbidden, KubeClient, NotFound
from shared.k8s.resources import SECRETS
from shared.pki import (
    InvalidSigningCA,
    IssuedCertificate,
    SigningCA,
    SigningRefused,
    fingerprint,
    load_signing_ca,
    sign_intermediate,
)

__all__ = [
    "SigningCAs",
    "chain_fingerprint",
    "missing_secret",
    "read_signing_secret",
    "sign",
    "ttl_for",
]


async def read_signing_secret(
    kube: KubeClient, ref: ObjectKey, *, scope: Sequence[str]
) -> Obj | Finding | None:
    """The signing Secret `ref` as the API has it now (None if gone), or why it may not be
    used: outside the signing namespaces `scope` (then it is not read at all), or the API
    server forbids the issuer to read it (403: a person must act, so not retried like an
    outage). Other API errors propagate; a 401 (our own token not valid yet) among them."""
    problem = scope_problem(ref.namespace, ref.name, scope)
    if problem is not None:
        return problem
    try:
        return await kube.get(SECRETS, ref.name, namespace=ref.namespace)
    except NotFound:
        return None
    except Forbidden as exc:
        if exc.code != 403:
            raise
        return forbidden_secret(ref.namespace, ref.name, exc.message)


def chain_fingerprint(ca: SigningCA) -> str:
    """SHA-256 over the DER of every certificate of the signing chain, signing CA first.

    What the desired state carries: it changes whenever the signing certificate or anything
    above it changes, and not when the Secret is merely rewritten with the same CA.
    """
    digest = hashlib.sha256()
    for certificate in ca.chain:
        digest.update(bytes.fromhex(fingerprint(certificate)))
    return digest.hexdigest()


def missing_secret(namespace: str, name: str) -> Finding:
    return Finding(
        reasons.SIGNING_SECRET_MISSING,
        f"signingCertificateSecret {namespace}/{name} does not exist in the management cluster",
    )


def _decode(data: Mapping[str, Any], where: str) -> dict[str, bytes] | Finding:
    out: dict[str, bytes] = {}
    for field, value in data.items():
        try:
            out[str(field)] = base64.b64decode(str(value), validate=True)
        except (binascii.Error, ValueError):
            return Finding(
                reasons.SIGNING_SECRET_INVALID,
                f"signingCertificateSecret {where}: data[{field!r}] is not base64",
            )
    return out


@dataclass(frozen=True, slots=True)
class _Loaded:
    ca: SigningCA
    chain_fingerprint: str


class SigningCAs:
    """A small cache of loaded signing CAs; thread-safe (the signing executor uses it)."""

    def __init__(self, *, size: int = 64) -> None:
        self._size = size
        self._cache: OrderedDict[tuple[str, str], _Loaded] = OrderedDict()
        self._lock = threading.Lock()

    def load(
        self, secret: Mapping[str, Any] | None, *, namespace: str, name: str, now: datetime
    ) -> tuple[SigningState, str | None]:
        """(the CA or the problem, the chain fingerprint when it loaded)."""
        if secret is None:
            return missing_secret(namespace, name), None
        meta = metadata(secret)
        key = (meta.uid, meta.resource_version or "")
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None:
                self._cache.move_to_end(key)
        where = f"{namespace}/{name}"
        if hit is not None:
            if hit.ca.valid_from <= now < hit.ca.valid_until:
                return hit.ca, hit.chain_fingerprint
            # Loaded while valid, expired (or not yet valid) now: say so, as a fresh load would.
            return (
                Finding(
                    reasons.SIGNING_SECRET_INVALID,
                    f"signingCertificateSecret {where} cannot sign: its chain is valid from "
                    f"{hit.ca.valid_from.isoformat()} until {hit.ca.valid_until.isoformat()}",
                ),
                None,
            )
        data = _decode(secret.get("data") or {}, where)
        if isinstance(data, Finding):
            return data, None
        try:
            ca = load_signing_ca(data, now=now)
        except InvalidSigningCA as exc:
            return (
                Finding(
                    reasons.SIGNING_SECRET_INVALID,
                    f"signingCertificateSecret {where} cannot sign ({exc.reason}): {exc.message}",
                ),
                None,
            )
        loaded = _Loaded(ca, chain_fingerprint(ca))
        with self._lock:
            self._cache[key] = loaded
            while len(self._cache) > self._size:
                self._cache.popitem(last=False)
        return ca, loaded.chain_fingerprint


def ttl_for(declaration: Declaration, *, max_ttl: timedelta) -> timedelta:
    """certOptions' lifetime, clamped by the issuer-wide maximum."""
    return min(declaration.spec.cert_options.lifetime, max_ttl)


def sign(
    csr_pem: str,
    ca: SigningCA,
    declaration: Declaration,
    *,
    max_ttl: timedelta,
    path_len: int,
    backdate: timedelta,
    now: datetime,
    constraints: x509.NameConstraints | None = None,
) -> IssuedCertificate | Finding:
    """Sign an authorised CSR (`policies.authorise` passed), or say why the CA refuses;
    `constraints`: the cluster registration's name constraints, if any."""
    csr = x509.load_pem_x509_csr(csr_pem.encode())
    try:
        return sign_intermediate(
            csr,
            ca,
            hosts=declaration.spec.hosts,
            org=declaration.spec.org,
            name=declaration.metadata.name,
            ttl=ttl_for(declaration, max_ttl=max_ttl),
            now=now,
            path_len=path_len,
            backdate=backdate,
            constraints=constraints,
        )
    except SigningRefused as exc:
        return Finding(exc.reason, exc.message)
