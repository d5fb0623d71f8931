"""Bus handlers: the issuer's and the bouncer's answers, written where the reconciler finds them.

- `certificate.issued` for the current issuance of an IssuedCertificate in REQUESTED: judged by
  `services.agent.trust` (every root must be pinned in this cluster's trust bundle, or
  cross-signed by a pinned root in the event's `cross_signed_pem`; then
  `shared.pki.check_bundle` on our key, the certificate, the chain and that root: chain valid
  now, declared hosts and org; then the CSR's key, the declared lifetime, the event's serial and
  dates), and the four files are written to the issued Secret in one request (with the
  issuance's trust epoch and the cross certificates as annotations). A refused
  certificate is not written; the verdict `refused` is left for the reconciler, which reports it
  (status.error, a Warning Event) and stays REQUESTED: the real answer may still come.
- `certificate.denied` for the current issuance: the verdict `denied` (the issuer's reason and
  message) is left on the IssuedCertificate.
- `bounce.completed` for the current issuance in ISSUED: the verdict `bounced` (with the
  bouncer's error, if any).

Then the IssuedCertificate's key is queued for the reconciler, which makes the transition. An
answer for another issuance (stale, or a duplicate after the transition) is acknowledged and
ignored. Every handler is idempotent (a redelivery finds the work done and does nothing) and
returns only after its Kubernetes write, so the bus acks only then. Kubernetes failures raise
`TransientError` (nak with backoff); malformed messages never get here (the consumer terminates
them).

Deliberately not here: state transitions, Events, status.changed (all the reconciler's).
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from pydantic import ValidationError

from services.agent.objects import (
    ISSUANCE_ID,
    ISSUED_SECRET,
    AgentObjects,
    KeySecret,
    annotations_of,
    issued_notes,
    key_secret_name,
    read_key_secret,
)
from services.agent.policies import Verdict
from services.agent.trust import TrustAnchors, TrustBundle, judge
from shared.api.meta import Obj, ObjectKey
from shared.api.v1alpha2 import IssuedCertificateSpec, IssuedCertificateStatus, State
from shared.bus import Delivery
from shared.controller.policy import Finding
from shared.events import (
    BounceCompleted,
    CertificateDenied,
    CertificateIssued,
    CertificateIssuedData,
    Event,
)
from shared.k8s.early import NOT_READ, spec_ref
from shared.k8s.errors import KubeError
from shared.k8s.informer import Informer, cached_in
from shared.k8s.resources import ISSUED_CERTIFICATES
from shared.pki import Bundle
from shared.runtime import TransientError
from shared.runtime.concurrency import concurrently
from shared.runtime.logging import get_logger

log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class _Found:
    """The current IssuedCertificate of an answer, and what a bundle write needs (read fresh)."""

    key: ObjectKey
    status: IssuedCertificateStatus
    spec: IssuedCertificateSpec | None
    """None when invalid: the reconciler reports it."""
    issued: Obj | None
    """The issued Secret the spec names (None: absent, or no valid spec)."""
    key_secret: Obj | None


class Handlers:
    """The agent's one bus handler (`__call__`), dispatching by event type."""

    def __init__(
        self,
        *,
        objects: AgentObjects,
        informers: Sequence[Informer],
        requeue: Callable[[ObjectKey], None],
        now: Callable[[], dt.datetime],
        trust: TrustBundle,
        sync_timeout: float = 30.0,
    ) -> None:
        self._objects = objects
        self._trust = trust
        self._informers = informers
        self._requeue = requeue
        self._now = now
        self._sync_timeout = sync_timeout

    async def __call__(self, event: Event, delivery: Delivery) -> None:
        try:
            if isinstance(event, CertificateIssued):
                await self.on_issued(event)
            elif isinstance(event, CertificateDenied):
                await self.on_denied(event)
            elif isinstance(event, BounceCompleted):
                await self.on_bounce_completed(event)
            else:  # the consumer accepts only the three types above
                log.warning("unexpected event type ignored", type=event.type.value)
        except KubeError as exc:
            raise TransientError(f"Kubernetes: {exc!r}", retry_after=exc.retry_after) from None

    # -- certificate.issued --------------------------------------------------------------------

    async def on_issued(self, event: CertificateIssued) -> None:
        # The trust bundle is read fresh beside the objects (an administrator's fix counts at
        # once); a failed read only matters if the answer gets to be judged.
        found, anchors = await concurrently(
            self._current_with_secrets(event.data.name, event.issuance), self._load_trust()
        )
        if found is None:
            log.info("certificate.issued for no current issuance; ignored", name=event.data.name)
            return
        key_secret = self._awaited(found, event)
        if key_secret is None or found.spec is None:
            return
        if isinstance(anchors, TransientError):
            raise anchors
        bundle = answer_bundle(event.data, key_secret.key_pem)
        spec = found.spec
        now = self._now()
        judged = await judge(
            anchors=anchors,
            data=event.data,
            bundle=bundle,
            csr_pem=key_secret.csr_pem,
            declared=spec.cert_options.lifetime,
            check=lambda b: self._objects.bundles.check(b, hosts=spec.hosts, org=spec.org, now=now),
            now=now,
        )
        if isinstance(judged, Finding):
            await self._refuse(found.key, event, judged)
        else:
            await self._install(found, event, bundle, key_secret)
        self._requeue(found.key)

    def _awaited(self, found: _Found, event: CertificateIssued) -> KeySecret | None:
        """The key Secret of the issuance `event` answers, when the answer is still awaited
        (REQUESTED, a valid spec, not written yet, our key at hand); None: nothing to do (the
        key is requeued when the reconciler has something to look at)."""
        key, existing = found.key, found.issued
        if found.status.state is not State.REQUESTED:
            log.info("duplicate certificate.issued ignored", key=str(key), state=found.status.state)
            return None
        if found.spec is None:
            return None  # the reconciler reports the invalid spec
        if existing is not None and annotations_of(existing).get(ISSUANCE_ID) == event.issuance:
            log.info("bundle of this issuance already written", key=str(key))
            self._requeue(key)
            return None
        key_secret = read_key_secret(found.key_secret)
        if key_secret is None or key_secret.material.issuance != event.issuance:
            log.info("no key for this issuance; ignored (the reconciler starts over)", key=str(key))
            self._requeue(key)
            return None
        return key_secret

    async def _refuse(self, key: ObjectKey, event: CertificateIssued, refusal: Finding) -> None:
        log.warning(
            "issued certificate refused; still waiting for the issuer's answer",
            key=str(key),
            reason=refusal.reason,
            error=refusal.message,
            serial=event.data.serial_number,
            source=event.source,
        )
        verdict = Verdict(
            issuance=event.issuance, kind="refused", reason=refusal.reason, message=refusal.message
        )
        await self._objects.set_verdict(key, verdict)

    async def _install(
        self, found: _Found, event: CertificateIssued, bundle: Bundle, key_secret: KeySecret
    ) -> None:
        assert found.spec is not None
        ref = found.spec.issued_certificate_secret
        await self._objects.write_issued_secret(
            namespace=ref.namespace,
            name=ref.name,
            bundle=bundle,
            notes=issued_notes(
                issuance=event.issuance,
                serial=event.data.serial_number,
                owner=found.key,
                declaration_generation=event.data.declaration_generation,
                signing_chain=key_secret.material.signing_chain,
                trust_epoch=key_secret.material.trust_epoch,
                cross_signed=event.data.cross_signed_pem,
            ),
            current=found.issued,
        )
        log.info("issued Secret written", key=str(found.key), serial=event.data.serial_number)

    async def _load_trust(self) -> TrustAnchors | Finding | TransientError:
        try:
            return await self._trust.load()
        except TransientError as exc:
            return exc

    # -- certificate.denied --------------------------------------------------------------------

    async def on_denied(self, event: CertificateDenied) -> None:
        found = await self._current(event.data.name, event.issuance)
        if found is None:
            log.info("certificate.denied for no current issuance; ignored", name=event.data.name)
            return
        key, _ic, status = found
        if status.state is not State.REQUESTED:
            log.info("certificate.denied after the fact ignored", key=str(key))
            return
        verdict = Verdict(
            issuance=event.issuance,
            kind="denied",
            reason=event.data.reason,
            message=f"{event.data.reason}: {event.data.message}",
            retry_after=event.data.retry_after,
        )
        await self._objects.set_verdict(key, verdict)
        self._requeue(key)

    # -- bounce.completed ----------------------------------------------------------------------

    async def on_bounce_completed(self, event: BounceCompleted) -> None:
        ref = event.data.issued_certificate
        key = ObjectKey(ref.namespace, ref.name)
        ic = await self._objects.get(ISSUED_CERTIFICATES, key.namespace, key.name)
        if ic is None:
            return
        status = _status(ic)
        if status.issuance_id != event.issuance or status.state is not State.ISSUED:
            log.info("bounce.completed for no current issuance; ignored", key=str(key))
            return
        verdict = Verdict(issuance=event.issuance, kind="bounced", message=event.data.error or "")
        await self._objects.set_verdict(key, verdict)
        self._requeue(key)

    # -- finding the IssuedCertificate ---------------------------------------------------------

    async def _candidates(self, name: str) -> list[ObjectKey]:
        """Keys of the IssuedCertificates named `name`, from the informers' caches.

        Events name the object but not its namespace (names are unique per cluster: they are the
        declaration's); the caches say where objects of that name are.
        """
        try:
            async with asyncio.timeout(self._sync_timeout):
                for informer in self._informers:
                    await informer.wait_synced()
        except TimeoutError:
            raise TransientError("the IssuedCertificate cache is not synced yet") from None
        return sorted(
            {key for informer in self._informers for key in informer.keys() if key.name == name}  # noqa: SIM118
        )

    async def _current(
        self, name: str, issuance: str
    ) -> tuple[ObjectKey, Obj, IssuedCertificateStatus] | None:
        """The IssuedCertificate named `name` whose current issuance is `issuance` (read fresh)."""
        for key in await self._candidates(name):
            ic = await self._objects.get(ISSUED_CERTIFICATES, key.namespace, key.name)
            if ic is None:
                continue
            status = _status(ic)
            if status.issuance_id == issuance:
                return key, ic, status
        return None

    async def _current_with_secrets(self, name: str, issuance: str) -> _Found | None:
        """`_current`, with its spec and the two Secrets a bundle write needs (issued, key), all
        read fresh.

        The three reads are independent but for the issued Secret's name, which is in the spec:
        the cached spec almost always names the same Secret, so it is read beside the
        IssuedCertificate (with the key Secret, whose name the key gives), and read again only
        if the fresh spec names another. The cache only chooses what to read early.
        """
        candidates = await self._candidates(name)
        if len(candidates) == 1:
            key = candidates[0]
            guess = spec_ref(cached_in(self._informers, key), ISSUED_SECRET)
            ic, early, key_secret = await concurrently(
                self._objects.get(ISSUED_CERTIFICATES, key.namespace, key.name),
                self._objects.get_secret_early(guess),
                self._objects.get_secret(key.namespace, key_secret_name(key.name)),
            )
            if ic is None:
                return None
        else:  # none, or one name in several namespaces: find it first
            found = await self._current(name, issuance)
            if found is None:
                return None
            key, ic, _ = found
            early = NOT_READ
            key_secret = await self._objects.get_secret(key.namespace, key_secret_name(key.name))
        status = _status(ic)
        if status.issuance_id != issuance:
            return None
        spec = _spec(ic)
        if spec is None:
            return _Found(key, status, None, None, key_secret)
        ref = spec.issued_certificate_secret
        existing = await self._objects.settle(early, ObjectKey(ref.namespace, ref.name))
        return _Found(key, status, spec, existing, key_secret)


def _spec(ic: Obj) -> IssuedCertificateSpec | None:
    try:
        return IssuedCertificateSpec.model_validate(ic.get("spec") or {})
    except ValidationError:
        return None


def _status(ic: Obj) -> IssuedCertificateStatus:
    try:
        return IssuedCertificateStatus.model_validate(ic.get("status") or {})
    except ValidationError:
        return IssuedCertificateStatus()


def answer_bundle(data: CertificateIssuedData, key_pem: bytes) -> Bundle:
    """The four files an answer makes with our key: `cert-chain.pem` is the certificate
    followed by the chain above it."""
    certificate = data.certificate_pem.encode()
    return Bundle(
        ca_cert_pem=certificate,
        ca_key_pem=key_pem,
        cert_chain_pem=_join(certificate, data.ca_chain_pem.encode()),
        root_cert_pem=data.root_cert_pem.encode(),
    )


def _join(certificate: bytes, chain: bytes) -> bytes:
    head = certificate if certificate.endswith(b"\n") else certificate + b"\n"
    return head + chain
