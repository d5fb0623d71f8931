"""reconcile(key) of one IssuedCertificate: gather, decide (policies), act, write status once.

Level-based, as controller-runtime's: the key says which object, never what happened. Each pass
reads the IssuedCertificate, its key Secret and its issued Secret fresh from the API (not from
a cache: a stale cache could make it believe the key Secret is missing and make a second key for
one issuance), runs the bundle check on the issued Secret, reads the verdict a bus handler left
for the current issuance, and hands all of it to `policies.decide`. The decision's I/O goes
through `objects.AgentObjects` and the bus; the status is written once, and a state change (or a
new issuance) is recorded as a Kubernetes Event and published as `status.changed`.

Order of writes, so that a crash anywhere leaves a state the next pass can finish:
key Secret -> status REQUESTED -> csr.requested (a crash before the status is adopted: the key
Secret's issuance is taken over, never a second key for it); the handler writes the issued
Secret; the reconciler then deletes the key Secret and writes ISSUED (at once: the key is in the
issued Secret by then, and a key Secret left over is deleted by the next pass), then bounce or
FINISHED.

Errors: Kubernetes errors propagate to the controller (rate-limited requeue); a publish that
cannot be stored raises `PublishError`, also a requeue. Key material appears only in Secrets.
Deliberately not here: the bus handlers (`handlers.py`) and desired state (`desired.py`).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import random
from collections.abc import Awaitable, Callable

import structlog
from pydantic import ValidationError

from services.agent import policies
from services.agent.metrics import AgentMetrics
from services.agent.objects import (
    DECLARATION_GENERATION,
    DECLARATION_UID,
    ISSUANCE_ID,
    ISSUED_SECRET,
    SIGNING_CHAIN,
    AgentObjects,
    KeySecret,
    annotations_of,
    key_secret_name,
    read_key_secret,
    read_verdict,
    secret_bytes,
)
from services.agent.policies import (
    Bounce,
    Complete,
    Decision,
    Fail,
    Finish,
    Issue,
    IssuedView,
    Observed,
    Refuse,
    Send,
    Timing,
    Wait,
)
from services.agent.trust import TrustAnchors, TrustBundle, check_root
from shared.api import reasons
from shared.api.meta import Obj, ObjectKey, metadata
from shared.api.v1alpha2 import IssuedCertificateSpec, IssuedCertificateStatus, State
from shared.bus import Bus
from shared.events import (
    BounceRequested,
    BounceRequestedData,
    CertificateState,
    CsrRequested,
    CsrRequestedData,
    Envelope,
    ObjectRef,
    StatusChanged,
    StatusChangedData,
    new_issuance_id,
)
from shared.k8s.controller import Done, ReconcileResult, RequeueAfter
from shared.k8s.early import EarlyRead, spec_ref
from shared.k8s.events import EventRecorder, transition_message, transition_reason
from shared.k8s.resources import ISSUED_CERTIFICATES
from shared.k8s.status import update_status
from shared.pki import (
    Bundle,
    BundleInvalid,
    KeySpec,
    PkiError,
    build_csr,
    generate_private_key,
    private_key_to_pem,
    serial_hex,
)
from shared.pki.keys import KeyAlgorithm as PkiKeyAlgorithm
from shared.runtime.clock import Clock, utcnow
from shared.runtime.concurrency import concurrently
from shared.runtime.logging import get_logger

log = get_logger(__name__)


class Reconciler:
    """The IssuedCertificate state machine of one cluster. `reconcile` is the controller's."""

    def __init__(
        self,
        *,
        cluster: str,
        source: str,
        objects: AgentObjects,
        bus: Bus,
        recorder: EventRecorder,
        timing: Timing,
        now: Clock = utcnow,
        rand: Callable[[], float] = random.random,
        cached: Callable[[ObjectKey], Obj | None] = lambda _key: None,
        trust: TrustBundle | None = None,
        metrics: AgentMetrics | None = None,
    ) -> None:
        self._cluster = cluster
        self._metrics = metrics
        self._trust = trust
        """The trust bundle as last read (by the handler or the readiness refresh): an issued
        Secret whose root is not pinned is not fit for use, and is issued again."""
        self._source = source
        self._objects = objects
        self._bus = bus
        self._recorder = recorder
        self._timing = timing
        self._now = now
        self._rand = rand
        self._cached = cached
        """The informers' copy of an IssuedCertificate: only to choose what to read early."""
        self._sent: dict[ObjectKey, tuple[str, str, int]] = {}
        """What this process sent last per key: (issuance, event, attempt). Empty after a
        restart, which is how a restart knows to send the current step again."""

    async def reconcile(self, key: ObjectKey) -> ReconcileResult:
        with structlog.contextvars.bound_contextvars(key=str(key), cluster=self._cluster):
            # The three reads of a pass are independent but for the issued Secret's name, which
            # is in the spec: read by the name the cached copy gives, and again in `_observe`
            # only if the fresh spec names another Secret.
            raw, raw_key_secret, early = await concurrently(
                self._objects.get(ISSUED_CERTIFICATES, key.namespace, key.name),
                self._objects.get_secret(key.namespace, key_secret_name(key.name)),
                self._objects.get_secret_early(spec_ref(self._cached(key), ISSUED_SECRET)),
            )
            if raw is None:
                self._sent.pop(key, None)
                return Done()
            if metadata(raw).deletion_timestamp is not None:
                return Done()
            now = self._now()
            observed, key_secret = await self._observe(key, raw, raw_key_secret, early, now)
            decision = policies.decide(observed, now=now, timing=self._timing)
            issuance = observed.status.issuance_id
            with structlog.contextvars.bound_contextvars(issuance=issuance):
                log.debug("reconcile.decided", decision=type(decision).__name__)
                return await self._act(key, raw, observed, key_secret, decision, now)

    # -- gathering ----------------------------------------------------------------------------

    async def _observe(
        self,
        key: ObjectKey,
        raw: Obj,
        raw_key_secret: Obj | None,
        early: EarlyRead,
        now: dt.datetime,
    ) -> tuple[Observed, KeySecret | None]:
        generation = metadata(raw).generation
        try:
            status = IssuedCertificateStatus.model_validate(raw.get("status") or {})
        except ValidationError:
            status = IssuedCertificateStatus()  # unreadable: start again, as from PENDING
        spec, spec_error = policies.validate_spec(raw.get("spec"), name=key.name)
        issued = await self._issued_view(spec, early, now)
        key_secret = read_key_secret(raw_key_secret)
        step = "bounce.requested" if status.state is State.ISSUED else "csr.requested"
        attempt = key_secret.material.attempt if key_secret is not None else 0
        sent = self._sent.get(key) == (
            status.issuance_id or "",
            step,
            attempt if step == "csr.requested" else 0,
        )
        observed = Observed(
            generation=generation,
            status=status,
            spec=spec,
            spec_error=spec_error,
            key=key_secret.material if key_secret is not None else None,
            issued=issued,
            verdict=read_verdict(raw, status.issuance_id),
            signing_chain=annotations_of(raw).get(SIGNING_CHAIN),
            sent=sent,
        )
        return observed, key_secret

    async def _issued_view(
        self, spec: IssuedCertificateSpec | None, early: EarlyRead, now: dt.datetime
    ) -> IssuedView | None:
        if spec is None:
            return None
        ref = spec.issued_certificate_secret
        secret = await self._objects.settle(early, ObjectKey(ref.namespace, ref.name))
        if secret is None:
            return None
        notes = annotations_of(secret)
        issuance = notes.get(ISSUANCE_ID)
        chain = notes.get(SIGNING_CHAIN)
        try:
            bundle = Bundle.from_secret_data(secret_bytes(secret))
            info = await self._objects.bundles.check(
                bundle, hosts=spec.hosts, org=spec.org, now=now
            )
        except BundleInvalid as exc:
            return IssuedView(issuance=issuance, info=None, problem=str(exc), signing_chain=chain)
        except PkiError as exc:  # the declared hosts or org themselves (validated before)
            return IssuedView(issuance=issuance, info=None, problem=str(exc), signing_chain=chain)
        anchors = self._trust.last if self._trust is not None else None
        if isinstance(anchors, TrustAnchors) and (
            untrusted := check_root(anchors, bundle.root_cert_pem.decode(errors="replace"))
        ):
            # Judged only against roots actually read: without a bundle, nothing in place is
            # torn down (a new certificate could not be installed anyway).
            problem = f"{untrusted.reason}: {untrusted.message}"
            return IssuedView(issuance=issuance, info=None, problem=problem, signing_chain=chain)
        return IssuedView(issuance=issuance, info=info, problem=None, signing_chain=chain)

    # -- acting -------------------------------------------------------------------------------

    async def _act(
        self,
        key: ObjectKey,
        raw: Obj,
        o: Observed,
        key_secret: KeySecret | None,
        decision: Decision,
        now: dt.datetime,
    ) -> ReconcileResult:
        status = o.status
        generation = o.generation
        if policies.spent_key(o) and not isinstance(decision, Issue):
            await self._objects.delete_key_secret(key)  # an Issue replaces it anyway
        if isinstance(decision, Wait):
            if decision.seconds is None:
                return Done()
            return RequeueAfter(decision.seconds)
        if isinstance(decision, Issue):
            return await self._issue(key, raw, o, key_secret, decision, now)
        if isinstance(decision, Send):
            assert key_secret is not None
            assert o.spec is not None
            await self._send_csr(key, raw, o.spec, key_secret, decision.attempt, now)
            return RequeueAfter(decision.wait)
        if isinstance(decision, Complete):
            assert o.spec is not None
            info = decision.info
            options = o.spec.cert_options
            renewal = policies.renewal_time(
                not_before=info.not_before,
                not_after=info.not_after,
                declared=options.lifetime,
                ratio=options.secret_rotation_grace_period_ratio,
                jitter=self._timing.renewal_jitter,
                rand=self._rand(),
            )
            new = status.model_copy(
                update={
                    "state": State.ISSUED,
                    "error": "",
                    "not_before": info.not_before,
                    "not_after": info.not_after,
                    "serial_number": serial_hex(info.serial),
                    "renewal_time": renewal,
                }
            )
            # The key Secret goes beside the ISSUED write, not before it: its key is in the
            # issued Secret now, and a crash between the two leaves a spent key Secret, which the
            # next pass deletes (`policies.spent_key`).
            _, written = await concurrently(
                self._objects.delete_key_secret(key),
                self._transition(key, raw, status, new, reasons.ISSUED, "bundle written"),
            )
            if self._metrics is not None:  # once per issuance: only this pass writes ISSUED
                sent_at = key_secret.material.requested_at if key_secret is not None else None
                self._metrics.issued(key, sent_at=sent_at, now=self._now())
            if o.spec.pod_bounce_directive is not None:
                await self._send_bounce(key, written, o.spec)
                return Done()
            return RequeueAfter(0)  # FINISHED in the next pass, its own transition
        if isinstance(decision, Refuse):
            # Still REQUESTED: only the error says what was refused. The next pass waits (or
            # re-sends the CSR when due), as it would have without the refused answer.
            new = status.model_copy(update={"error": decision.error})
            warning = (
                reasons.TRUST_BUNDLE_UNAVAILABLE
                if decision.reason in (reasons.TRUST_BUNDLE_MISSING, reasons.TRUST_BUNDLE_INVALID)
                else reasons.RATE_LIMITED
                if decision.reason == reasons.RATE_LIMITED
                else reasons.UNTRUSTED_CERTIFICATE
            )
            await self._transition(
                key, raw, status, new, decision.reason, decision.error, warning=warning
            )
            return RequeueAfter(0)
        if isinstance(decision, Bounce):
            assert o.spec is not None
            await self._send_bounce(key, raw, o.spec)
            return Done()
        if isinstance(decision, Finish):
            new = status.model_copy(
                update={"state": State.FINISHED, "error": "", "failed_attempts": 0}
            )
            await self._transition(key, raw, status, new, reasons.FINISHED, "issuance complete")
            wait = self._timing.max_requeue
            if new.renewal_time is not None:
                wait = min(wait, max(0.0, (new.renewal_time - now).total_seconds()))
            return RequeueAfter(wait)
        assert isinstance(decision, Fail)
        failures = status.failed_attempts + 1
        retry_at: dt.datetime | None = None
        if decision.retry:
            delay = policies.retry_delay(failures, timing=self._timing, rand=self._rand())
            retry_at = now + dt.timedelta(seconds=delay)
        new = status.model_copy(
            update={
                "state": State.FAILED,
                "error": decision.error,
                "observed_generation": generation,
                "failed_attempts": failures,
                "renewal_time": retry_at,
            }
        )
        if key_secret is not None:
            # First, so that FAILED never has its issuance's key lying around; a crash in between
            # is REQUESTED without a key, which starts over (KeyLost).
            await self._objects.delete_key_secret(key)  # its key will never be certified
        await self._transition(key, raw, status, new, decision.reason, decision.error)
        if retry_at is None:
            return Done()
        return RequeueAfter(max(0.0, (retry_at - now).total_seconds()))

    async def _issue(
        self,
        key: ObjectKey,
        raw: Obj,
        o: Observed,
        key_secret: KeySecret | None,
        decision: Issue,
        now: dt.datetime,
    ) -> ReconcileResult:
        spec = o.spec
        assert spec is not None
        log.info("issuance.starting", reason=decision.reason, detail=decision.message)
        if decision.adopt is not None and key_secret is not None:
            issuance = decision.adopt.issuance
        else:
            issuance = new_issuance_id()
            options = spec.cert_options
            key_spec = KeySpec(
                algorithm=PkiKeyAlgorithm(options.key_algorithm.value), size=options.key_size
            )
            # CPU-bound (RSA-4096 takes up to ~1.3 s): off the event loop.
            private_key = await asyncio.to_thread(generate_private_key, key_spec)
            csr_pem = build_csr(private_key, org=spec.org, name=key.name, hosts=spec.hosts)
            stored = await self._objects.write_key_secret(
                raw,
                issuance=issuance,
                generation=o.generation,
                key_pem=private_key_to_pem(private_key),
                csr_pem=csr_pem,
                signing_chain=o.signing_chain,
                requested_at=self._now(),
            )
            del private_key
            key_secret = read_key_secret(stored)
        new = o.status.model_copy(
            update={
                "state": State.REQUESTED,
                "error": "",
                "observed_generation": o.generation,
                "issuance_id": issuance,
            }
        )
        if key_secret is None or key_secret.material.issuance != issuance:
            return RequeueAfter(0)  # not the key Secret we meant: the next pass looks again
        material = key_secret

        async def send(written: Obj) -> None:
            # The CSR goes out right after REQUESTED is stored, before the Event and
            # status.changed: those are bookkeeping, the CSR is the issuance's critical path.
            await self._send_csr(key, written, spec, material, material.material.attempt, now)

        await self._transition(
            key, raw, o.status, new, decision.reason, decision.message, then=send
        )
        return RequeueAfter(self._timing.resend_after)

    async def _send_csr(
        self,
        key: ObjectKey,
        raw: Obj,
        spec: IssuedCertificateSpec,
        key_secret: KeySecret,
        attempt: int,
        now: dt.datetime,
    ) -> None:
        material = key_secret.material
        event = CsrRequested(
            source=self._source,
            cluster=self._cluster,
            issuance=material.issuance,
            data=CsrRequestedData(
                name=key.name,
                declaration_uid=_declaration_uid(raw),
                declaration_generation=_declaration_generation(raw),
                csr_pem=key_secret.csr_pem.decode(),
                attempt=attempt,
            ),
        )
        published = await self._bus.publish(event)
        if attempt != material.attempt or material.requested_at is None:
            await self._objects.mark_sent(key_secret, attempt=attempt, at=now)
        self._sent[key] = (material.issuance, "csr.requested", attempt)
        log.info("csr.sent", attempt=attempt, duplicate=published.duplicate)

    async def _send_bounce(self, key: ObjectKey, raw: Obj, spec: IssuedCertificateSpec) -> None:
        directive = spec.pod_bounce_directive
        assert directive is not None
        issuance = IssuedCertificateStatus.model_validate(raw.get("status") or {}).issuance_id
        assert issuance is not None
        event = BounceRequested(
            source=self._source,
            cluster=self._cluster,
            issuance=issuance,
            data=BounceRequestedData(
                directive=ObjectRef(namespace=directive.namespace, name=directive.name),
                issued_certificate=ObjectRef(namespace=key.namespace, name=key.name),
            ),
        )
        await self._bus.publish(event)
        self._sent[key] = (issuance, "bounce.requested", 0)
        log.info("bounce.requested", directive=f"{directive.namespace}/{directive.name}")

    async def _transition(
        self,
        key: ObjectKey,
        raw: Obj,
        old: IssuedCertificateStatus,
        new: IssuedCertificateStatus,
        reason: str,
        message: str,
        then: Callable[[Obj], Awaitable[None]] | None = None,
        warning: str | None = None,
    ) -> Obj:
        """Write `new` (the one status write of this pass); then `then(written)` (the step's
        own message, so that it does not wait behind the bookkeeping); then record the Event
        and publish status.changed when the state or the issuance changed (`warning`: the
        Event is a Warning of that reason). Returns the object written."""
        wire = new.to_wire()
        write = await update_status(
            self._objects.kube,
            ISSUED_CERTIFICATES,
            key.name,
            namespace=key.namespace,
            mutate=lambda _obj: wire,
            current=raw,
        )
        try:
            if then is not None:
                await then(write.object)
        finally:
            # The bookkeeping is done even when `then` failed: the state change stands.
            await self._announce(key, write.object, old, new, reason, message, warning)
        return write.object

    async def _announce(
        self,
        key: ObjectKey,
        written: Obj,
        old: IssuedCertificateStatus,
        new: IssuedCertificateStatus,
        reason: str,
        message: str,
        warning: str | None = None,
    ) -> None:
        """The Event and status.changed of a transition (nothing when nothing changed)."""
        if old.state == new.state and old.issuance_id == new.issuance_id and old.error == new.error:
            return
        if warning is not None:
            await self._recorder.record(written, type="Warning", reason=warning, message=message)
        else:
            text = transition_message(new.state, new.error)
            if new.state is not State.FAILED:
                text = f"{text} ({reason}: {message})"
            await self._recorder.record(
                written,
                type="Warning" if new.state is State.FAILED else "Normal",
                reason=transition_reason(new.state),
                message=text,
            )
        log.info(
            "state.changed",
            old=old.state.value,
            new=new.state.value,
            reason=reason,
            error=new.error or None,
        )
        await self._publish_status(key, written, new)

    async def _publish_status(
        self, key: ObjectKey, obj: Obj, status: IssuedCertificateStatus
    ) -> None:
        issuance = status.issuance_id or _derived_issuance(obj)
        event: Envelope = StatusChanged(
            source=self._source,
            cluster=self._cluster,
            issuance=issuance,
            data=StatusChangedData(
                name=key.name,
                namespace=key.namespace,
                state=CertificateState(status.state.value),
                error=status.error[:4096] or None,
                observed_generation=status.observed_generation,
                declaration_generation=_declaration_generation_or_none(obj),
                serial_number=status.serial_number,
                not_after=status.not_after,
            ),
        )
        await self._bus.publish(event)


def _declaration_uid(obj: Obj) -> str:
    value = annotations_of(obj).get(DECLARATION_UID) or metadata(obj).uid or "unknown"
    return value[:64]


def _declaration_generation_or_none(obj: Obj) -> int | None:
    value = annotations_of(obj).get(DECLARATION_GENERATION)
    try:
        number = int(value) if value is not None else None
    except ValueError:
        return None
    return number if number is not None and number >= 1 else None


def _declaration_generation(obj: Obj) -> int:
    """The declaration's generation; for an IssuedCertificate made locally, its own."""
    value = _declaration_generation_or_none(obj)
    if value is not None:
        return value
    return max(1, metadata(obj).generation)


def _derived_issuance(obj: Obj) -> str:
    """An issuance id for a status.changed of an object that never had an issuance (invalid
    from the start): stable per object and generation, so repeats correlate."""
    meta = metadata(obj)
    seed = f"{meta.get('uid')}:{meta.get('generation')}"
    return hashlib.sha256(seed.encode()).hexdigest()[:32]


__all__ = ["Reconciler"]
