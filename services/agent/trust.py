"""The agent's pinned trust: which roots a `certificate.issued` must chain to, and what it must be.

A `certificate.issued` is only a claim made by whoever could publish on the subject. The agent
installs the certificate only if it holds up on facts from its own cluster:

- the **trust bundle**, a ConfigMap of this cluster named by `MESHTRUST_AGENT_TRUST_BUNDLE`
  (`<namespace>/<name>`), key `roots.pem`: one or more PEM root certificates, written by an
  administrator when the agent is installed (public data: no Secret needed);
- the **IssuedCertificate** (declared names, org and lifetime) and the **key Secret** (the
  CSR this issuance sent).

`judge` is the chain of small policies (pure but for the bundle check it is handed, which runs
in a thread), first failure wins, each a `shared.controller.policy.Finding` (reason, message): every
root of the event's `root_cert_pem` must be vouched for by the pinned roots, i.e. be one of them
or come with a cross certificate (the event's `cross_signed_pem`) for exactly its subject and key
signed by one of them (`shared.pki.vouched_roots`) [`TrustBundleMissing`, `TrustBundleInvalid`,
`UntrustedRoot`]; the bundle check (`shared.pki.check_bundle`: key and certificate, chain in
order to one of those roots and valid now, CA extensions, declared hosts and org) must pass [its
own reasons, e.g. `ChainBroken`, `RootMismatch`, `HostsMismatch`]; the certificate must be for the
CSR's key [`KeyMismatch`], live no longer than declared [`ValidityTooLong`], and be the one the
event describes [`SerialMismatch`, `ValidityMismatch`]. A refusal never moves the issuance to
FAILED: the agent keeps waiting for (and re-asking for) the issuer's real answer, so that a
forged event cannot end an issuance either.

A root rotation (docs/rotation.md) teaches the cluster a new root this way: the issuer sends the
new root in `root_cert_pem` with its cross certificate by the old root; the agent writes both
roots to `root-cert.pem` and keeps the cross certificate on the issued Secret
(`objects.CROSS_SIGNED`), so that the checks of the Secret in place (`assess_issued`) vouch for
the new root again without the event.

Deliberately not here: changing the bundle. Only an administrator writes the ConfigMap (the agent
may only read it), and re-pins the new root after a rotation (docs/agent.md, "Trust bundle");
chains of cross certificates (a root vouched for only by a vouched-for root).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from services.agent.bundles import BundleChecks
from services.agent.objects import (
    CROSS_SIGNED,
    ISSUANCE_ID,
    SIGNING_CHAIN,
    TRUST_EPOCH,
    annotations_of,
    declaration_generation_or_none,
    secret_bytes,
)
from services.agent.policies import IssuedView
from shared.api import reasons
from shared.api.meta import Obj
from shared.api.v1alpha2 import IssuedCertificateSpec
from shared.controller.policy import Finding
from shared.events import CertificateIssuedData
from shared.k8s.client import KubeClient
from shared.k8s.errors import KubeError, NotFound
from shared.k8s.resources import CONFIG_MAPS
from shared.pki import Bundle, BundleInfo, PkiError, fingerprint, serial_hex, vouched_roots
from shared.pki.pem import load_certificates
from shared.runtime import TransientError
from shared.runtime.logging import get_logger

log = get_logger(__name__)

TRUST_BUNDLE_KEY = "roots.pem"
"""The ConfigMap key holding the pinned roots (PEM, one or more certificates)."""

VALIDITY_SLACK = dt.timedelta(hours=1)
"""How much longer than declared a certificate may live: the issuer backdates notBefore for
clock skew (5 minutes by default, `MESHTRUST_ISSUER_BACKDATE`); an hour covers any sane value
and is nothing next to a lifetime of days (the attack seen had notAfter 2035)."""


@dataclass(frozen=True, slots=True)
class TrustAnchors:
    """The pinned roots, and their SHA-256 fingerprints (of the DER)."""

    fingerprints: frozenset[str]
    roots: tuple[x509.Certificate, ...]
    source: str
    """`<namespace>/<name>` of the ConfigMap they came from."""


class _BundleError(PkiError):
    pass


def parse_trust_bundle(configmap: Mapping[str, Any] | None, *, ref: str) -> TrustAnchors | Finding:
    """The roots of the trust bundle ConfigMap `ref` (None: it does not exist), or why not."""
    create = (
        f"create ConfigMap {ref} with key {TRUST_BUNDLE_KEY} holding the mesh's root "
        "certificate(s) (PEM); until then every certificate is refused"
    )
    if configmap is None:
        return Finding(reasons.TRUST_BUNDLE_MISSING, f"the trust bundle does not exist: {create}")
    pem = (configmap.get("data") or {}).get(TRUST_BUNDLE_KEY)
    if not isinstance(pem, str) or not pem.strip():
        return Finding(reasons.TRUST_BUNDLE_INVALID, f"{ref} has no {TRUST_BUNDLE_KEY}: {create}")
    try:
        roots = load_certificates(
            pem.encode(), field=f"{ref} {TRUST_BUNDLE_KEY}", error=_BundleError
        )
    except PkiError as exc:
        return Finding(reasons.TRUST_BUNDLE_INVALID, f"{exc.message}: {create}")
    for root in roots:
        if root.issuer != root.subject:
            return Finding(
                reasons.TRUST_BUNDLE_INVALID,
                f"{ref} {TRUST_BUNDLE_KEY} holds a certificate that is not a root (its issuer is "
                "not its subject): pin roots only",
            )
    return TrustAnchors(
        fingerprints=frozenset(fingerprint(r) for r in roots), roots=tuple(roots), source=ref
    )


async def judge(
    *,
    anchors: TrustAnchors | Finding,
    data: CertificateIssuedData,
    bundle: Bundle,
    csr_pem: bytes,
    declared: dt.timedelta,
    check: Callable[[Bundle], Awaitable[BundleInfo]],
    now: dt.datetime,
) -> Finding | BundleInfo:
    """Whether the answer `data` (assembled with our key into `bundle`) may be installed: the
    facts of the bundle, or the first refusal. `check` is the bundle check (`check_bundle` with
    the declared hosts and org, at `now`)."""
    if refusal := check_root(anchors, data.root_cert_pem, data.cross_signed_pem, now=now):
        return refusal
    try:
        info = await check(bundle)
    except PkiError as exc:  # BundleInvalid included
        return Finding(exc.reason, exc.message)
    if refusal := check_issued(info=info, data=data, csr_pem=csr_pem, declared=declared):
        return refusal
    return info


def check_root(
    anchors: TrustAnchors | Finding,
    root_cert_pem: str,
    cross_signed_pem: str | None,
    *,
    now: dt.datetime,
) -> Finding | None:
    """Every root of `root_cert_pem` must be pinned, or vouched for by a pinned root through a
    cross certificate of `cross_signed_pem` valid at `now` (`shared.pki.vouched_roots`)."""
    if isinstance(anchors, Finding):
        return anchors
    try:
        roots = load_certificates(root_cert_pem.encode(), field="root_cert_pem", error=_BundleError)
        cross = (
            load_certificates(
                cross_signed_pem.encode(), field="cross_signed_pem", error=_BundleError
            )
            if cross_signed_pem
            else []
        )
    except PkiError as exc:
        return Finding(reasons.UNTRUSTED_ROOT, exc.message)
    vouched = vouched_roots(roots, pinned=anchors.roots, cross_signed=cross, now=now)
    if vouched.untrusted:
        return Finding(
            reasons.UNTRUSTED_ROOT,
            f"the certificate's root {fingerprint(vouched.untrusted[0])[:16]} is neither one of "
            f"the roots pinned in {anchors.source} nor cross-signed by one of them",
        )
    return None


def check_issued(
    *,
    info: BundleInfo,
    data: CertificateIssuedData,
    csr_pem: bytes,
    declared: dt.timedelta,
) -> Finding | None:
    """What the bundle check cannot know: the certificate is for this issuance's CSR key,
    lives no longer than declared, and is the one the event describes."""
    try:
        csr = x509.load_pem_x509_csr(csr_pem)
    except ValueError:
        return Finding(reasons.CSR_UNREADABLE, "the CSR stored in the key Secret cannot be read")
    public = csr.public_key()
    if (
        not isinstance(public, rsa.RSAPublicKey | ec.EllipticCurvePublicKey)
        or fingerprint(public) != info.public_key_fingerprint
    ):
        return Finding(
            reasons.KEY_MISMATCH, "the certificate is not for the key of this issuance's CSR"
        )
    lifetime = info.not_after - info.not_before
    if lifetime > declared + VALIDITY_SLACK:
        return Finding(
            reasons.VALIDITY_TOO_LONG,
            f"the certificate is valid from {info.not_before.isoformat()} to "
            f"{info.not_after.isoformat()}, longer than the declared {_duration(declared)}",
        )
    if info.serial != int(data.serial_number, 16):
        return Finding(
            reasons.SERIAL_MISMATCH,
            f"the event says serial {data.serial_number}, "
            f"the certificate {serial_hex(info.serial)}",
        )
    if (data.not_before, data.not_after) != (info.not_before, info.not_after):
        return Finding(
            reasons.VALIDITY_MISMATCH, "the event's notBefore/notAfter are not the certificate's"
        )
    return None


async def assess_issued(
    secret: Obj,
    *,
    spec: IssuedCertificateSpec,
    checks: BundleChecks,
    anchors: TrustAnchors | Finding | None,
    now: dt.datetime,
) -> IssuedView:
    """The issued Secret in place as the reconciler sees it: whose issuance it holds, and
    whether it passes the bundle check and chains to a pinned root (`anchors`: as last read)."""
    notes = annotations_of(secret)
    view = IssuedView(
        issuance=notes.get(ISSUANCE_ID),
        info=None,
        problem=None,
        signing_chain=notes.get(SIGNING_CHAIN),
        epoch=notes.get(TRUST_EPOCH, ""),
        declaration_generation=declaration_generation_or_none(secret),
    )
    try:
        bundle = Bundle.from_secret_data(secret_bytes(secret))
        # The root first: a CA of a root nobody pinned is a foreign CA, whatever else is wrong
        # with it (the agent warns of it as such: `warnings.tamper_warning`). Judged only
        # against roots actually read: without a bundle, nothing in place is torn down (a
        # new certificate could not be installed anyway).
        if isinstance(anchors, TrustAnchors) and (
            untrusted := check_root(
                anchors,
                bundle.root_cert_pem.decode(errors="replace"),
                notes.get(CROSS_SIGNED),
                now=now,
            )
        ):
            return dataclasses.replace(view, problem=f"{untrusted.reason}: {untrusted.message}")
        info = await checks.check(bundle, hosts=spec.hosts, org=spec.org, now=now)
    except PkiError as exc:  # BundleInvalid, or the declared hosts or org themselves
        return dataclasses.replace(view, problem=str(exc))
    return dataclasses.replace(view, info=info)


def _duration(delta: dt.timedelta) -> str:
    seconds = int(delta.total_seconds())
    if seconds % 86400 == 0:
        return f"{seconds // 86400}d"
    return f"{seconds}s"


class TrustBundle:
    """Reads the trust bundle ConfigMap (`get` only: the RBAC grants nothing else on it).

    `load` reads it fresh, for each `certificate.issued` judged: a bundle an administrator
    fixed counts at once. `has_loaded` (readiness) says whether the last read found usable
    roots; `refresh` re-reads it for readiness between certificates."""

    def __init__(self, kube: KubeClient, *, ref: str) -> None:
        self._kube = kube
        self.ref = ref
        namespace, _, name = ref.partition("/")
        self._namespace, self._name = namespace, name
        self.last: TrustAnchors | Finding | None = None

    @property
    def has_loaded(self) -> bool:
        return isinstance(self.last, TrustAnchors)

    async def load(self) -> TrustAnchors | Finding:
        """The pinned roots, or why there are none; `TransientError` if the API fails."""
        try:
            raw: dict[str, Any] | None = await self._kube.get(
                CONFIG_MAPS, self._name, namespace=self._namespace
            )
        except NotFound:
            raw = None
        except KubeError as exc:
            raise TransientError(f"reading trust bundle {self.ref}: {exc}") from None
        result = parse_trust_bundle(raw, ref=self.ref)
        if isinstance(result, Finding) and not isinstance(self.last, Finding):
            log.warning("trust bundle unusable", ref=self.ref, reason=result.reason)
        self.last = result
        return result

    async def refresh(self) -> None:
        """`load` for readiness: an API failure keeps the last answer."""
        try:
            await self.load()
        except TransientError as exc:
            log.info("trust bundle not read", ref=self.ref, error=exc.message)
