"""reconcile(key) of one IssuedCertificate: gather, decide (policies), act, write status once.

Level-based, as controller-runtime's: the key says which object, never what happened. Each pass
reads the IssuedCertificate, its key Secret and its issued Secret fresh from the API (not from
a cache: a stale cache could make it believe the key Secret is missing and make a second key for
one issuance), runs the bundle check on the issued Secret, reads the verdict a bus handler left
for the current issuance, and hands all of it to `policies.decide`. Each kind of decision has
its own method (`_act` dispatches on the type); their I/O goes through `objects.AgentObjects`
and the bus; the status is written once, and a state change (or a new issuance) is recorded as
a Kubernetes Event and published as `status.changed`. This is the only place that publishes
`status.changed`: also for a declaration the cluster refused, which desired state hands over
(`report_refused`).

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
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import structlog
from pydantic import ValidationError

from services.agent import policies
from services.agent.forbidden import forbidden_error
from services.agent.messages import Messages
from services.agent.metrics import AgentMetrics
from services.agent.objects import (
    ISSUED_SECRET,
    SIGNING_CHAIN,
    TRUST_EPOCH,
    AgentObjects,
    KeySecret,
    annotations_of,
    declaration_generation,
    key_secret_name,
    read_key_secret,
    read_verdict,
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
    Readopt,
    Refuse,
    Send,
    Timing,
    Wait,
)
from services.agent.transitions import Transitions
from services.agent.trust import TrustBundle, assess_issued
from services.agent.warnings import tamper_warning, warning_message
from shared.api import reasons
from shared.api.meta import Obj, ObjectKey, metadata
from shared.api.v1alpha2 import IssuedCertificateSpec, IssuedCertificateStatus, State
from shared.bus import Bus
from shared.events import (
    DesiredObject,
    new_issuance_id,
)
from shared.k8s.controller import Done, ReconcileResult, RequeueAfter
from shared.k8s.early import EarlyRead, spec_ref
from shared.k8s.errors import Forbidden
from shared.k8s.events import EventRecorder
from shared.k8s.resources import ISSUED_CERTIFICATES
from shared.pki import (
    BundleInfo,
    KeySpec,
    build_csr,
    generate_private_key,
    private_key_to_pem,
)
from shared.pki.keys import KeyAlgorithm as PkiKeyAlgorithm
from shared.runtime.clock import Clock, utcnow
from shared.runtime.concurrency import concurrently
from shared.runtime.logging import get_logger

log = get_logger(__name__)

READOPTED = "Readopted"
"""The reason of a `Readopt` transition (its Event and log line)."""


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
        self._messages = Messages(source=source, cluster=cluster)
        self._objects = objects
        self._bus = bus
        self._transitions = Transitions(
            kube=objects.kube, bus=bus, recorder=recorder, messages=self._messages
        )
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
            try:
                return await self._pass(key)
            except Forbidden as error:  # our RBAC: FAILED with what to grant (forbidden.py)
                return await self._forbidden(key, error)

    async def _pass(self, key: ObjectKey) -> ReconcileResult:
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
            return await self._act(_Pass(key, raw, observed, key_secret, now), decision)

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
        status = _readable_status(raw)
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
            declaration_generation=declaration_generation(raw),
            trust_epoch=annotations_of(raw).get(TRUST_EPOCH, ""),
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
        anchors = self._trust.last if self._trust is not None else None
        return await assess_issued(
            secret, spec=spec, checks=self._objects.bundles, anchors=anchors, now=now
        )

    # -- acting: one method per decision ------------------------------------------------------

    async def _act(self, p: _Pass, decision: Decision) -> ReconcileResult:
        if policies.spent_key(p.observed) and not isinstance(decision, Issue):
            await self._objects.delete_key_secret(p.key)  # an Issue replaces it anyway
        match decision:
            case Wait():
                return Done() if decision.seconds is None else RequeueAfter(decision.seconds)
            case Issue():
                return await self._issue(p, decision)
            case Readopt():
                return await self._readopt(p, decision)
            case Send():
                return await self._resend(p, decision)
            case Complete():
                return await self._install(p, decision)
            case Refuse():
                return await self._refuse(p, decision)
            case Bounce():
                await self._send_bounce(p, p.raw)
                return Done()
            case Finish():
                return await self._finish(p)
            case Fail():
                return await self._fail(p, decision)

    async def _issue(self, p: _Pass, decision: Issue) -> ReconcileResult:
        """Start (or adopt) an issuance: key Secret -> REQUESTED -> csr.requested."""
        log.info("issuance.starting", reason=decision.reason, detail=decision.message)
        key_secret = p.key_secret
        if decision.adopt is not None and key_secret is not None:
            issuance = decision.adopt.issuance
        else:
            issuance = new_issuance_id()
            key_secret = await self._new_key(p, issuance)
        new = p.status.model_copy(
            update={
                "state": State.REQUESTED,
                "error": "",
                "observed_generation": p.observed.generation,
                "issuance_id": issuance,
            }
        )
        if key_secret is None or key_secret.material.issuance != issuance:
            return RequeueAfter(0)  # not the key Secret we meant: the next pass looks again
        material = key_secret

        async def send(written: Obj) -> None:
            # The CSR goes out right after REQUESTED is stored, before the Event and
            # status.changed: those are bookkeeping, the CSR is the issuance's critical path.
            attempt = material.material.attempt
            await self._send_csr(p, written, material, attempt)

        message, warning = decision.message, tamper_warning(decision.reason, decision.message)
        if warning is not None:
            ref = p.spec.issued_certificate_secret
            message = warning_message(warning, message, secret=f"{ref.namespace}/{ref.name}")
        await self._transition(p, new, decision.reason, message, then=send, warning=warning)
        return RequeueAfter(self._timing.resend_after)

    async def _new_key(self, p: _Pass, issuance: str) -> KeySecret | None:
        """A fresh key and CSR for `issuance`, stored in the key Secret (read back)."""
        spec = p.spec
        options = spec.cert_options
        key_spec = KeySpec(
            algorithm=PkiKeyAlgorithm(options.key_algorithm.value), size=options.key_size
        )
        # CPU-bound (RSA-4096 takes up to ~1.3 s): off the event loop.
        private_key = await asyncio.to_thread(generate_private_key, key_spec)
        csr_pem = build_csr(private_key, org=spec.org, name=p.key.name, hosts=spec.hosts)
        stored = await self._objects.write_key_secret(
            p.raw,
            issuance=issuance,
            generation=p.observed.generation,
            key_pem=private_key_to_pem(private_key),
            csr_pem=csr_pem,
            signing_chain=p.observed.signing_chain,
            trust_epoch=p.observed.trust_epoch,
            requested_at=self._now(),
        )
        del private_key
        return read_key_secret(stored)

    async def _resend(self, p: _Pass, decision: Send) -> ReconcileResult:
        assert p.key_secret is not None
        await self._send_csr(p, p.raw, p.key_secret, decision.attempt)
        return RequeueAfter(decision.wait)

    async def _install(self, p: _Pass, decision: Complete) -> ReconcileResult:
        """The issued Secret holds this issuance: ISSUED, then bounce (or FINISHED next pass)."""
        new = self._holding(p, decision.info, state=State.ISSUED)
        # The key Secret goes beside the ISSUED write, not before it: its key is in the
        # issued Secret now, and a crash between the two leaves a spent key Secret, which the
        # next pass deletes (`policies.spent_key`).
        _, written = await concurrently(
            self._objects.delete_key_secret(p.key),
            self._transition(p, new, reasons.ISSUED, "bundle written"),
        )
        if self._metrics is not None:  # once per issuance: only this pass writes ISSUED
            sent_at = p.key_secret.material.requested_at if p.key_secret is not None else None
            self._metrics.issued(p.key, sent_at=sent_at, now=self._now())
        if p.spec.pod_bounce_directive is not None:
            await self._send_bounce(p, written)
            return Done()
        return RequeueAfter(0)  # FINISHED in the next pass, its own transition

    async def _readopt(self, p: _Pass, decision: Readopt) -> ReconcileResult:
        """A new IssuedCertificate takes over the valid certificate in its issued Secret:
        FINISHED at once, with no key, no CSR and no bounce (`policies.Readopt`)."""
        new = self._holding(p, decision.info, state=State.FINISHED).model_copy(
            update={
                "observed_generation": p.observed.generation,
                "issuance_id": decision.issuance,
                "failed_attempts": 0,
            }
        )
        if p.key_secret is not None:  # a previous object's, never certified: nothing awaits it
            await self._objects.delete_key_secret(p.key)
        await self._transition(p, new, READOPTED, "the certificate in the issued Secret is kept")
        return RequeueAfter(0)

    def _holding(self, p: _Pass, info: BundleInfo, *, state: State) -> IssuedCertificateStatus:
        return policies.holding(
            p.status,
            info,
            options=p.spec.cert_options,
            state=state,
            jitter=self._timing.renewal_jitter,
            rand=self._rand(),
        )

    async def _refuse(self, p: _Pass, decision: Refuse) -> ReconcileResult:
        """Still REQUESTED: only the error says what was refused. The next pass waits (or
        re-sends the CSR when due), as it would have without the refused answer."""
        new = p.status.model_copy(update={"error": decision.error})
        warning = policies.refusal_event_reason(decision.reason)
        await self._transition(p, new, decision.reason, decision.error, warning=warning)
        return RequeueAfter(0)

    async def _forbidden(self, key: ObjectKey, error: Forbidden) -> ReconcileResult:
        raw = await self._objects.get(ISSUED_CERTIFICATES, key.namespace, key.name)
        if raw is None or metadata(raw).deletion_timestamp is not None:
            return Done()
        old = _readable_status(raw)
        new = self._failed(
            old,
            error=forbidden_error(error),
            generation=metadata(raw).generation,
            now=(now := self._now()),
            retry=True,
        )
        log.warning("reconcile.forbidden", error=error.message)
        await self._transitions.write(
            key, raw, old, new, reason=reasons.FORBIDDEN, message=new.error
        )
        assert new.renewal_time is not None
        return RequeueAfter(max(0.0, (new.renewal_time - now).total_seconds()))

    async def _finish(self, p: _Pass) -> ReconcileResult:
        new = p.status.model_copy(
            update={"state": State.FINISHED, "error": "", "failed_attempts": 0}
        )
        await self._transition(p, new, reasons.FINISHED, "issuance complete")
        wait = self._timing.max_requeue
        if new.renewal_time is not None:
            wait = min(wait, max(0.0, (new.renewal_time - p.now).total_seconds()))
        return RequeueAfter(wait)

    async def _fail(self, p: _Pass, decision: Fail) -> ReconcileResult:
        new = self._failed(
            p.status,
            error=decision.error,
            generation=p.observed.generation,
            now=p.now,
            retry=decision.retry,
        )
        if p.key_secret is not None:
            # First, so that FAILED never has its issuance's key lying around; a crash in between
            # is REQUESTED without a key, which starts over (KeyLost).
            await self._objects.delete_key_secret(p.key)  # its key will never be certified
        await self._transition(p, new, decision.reason, decision.error)
        if new.renewal_time is None:
            return Done()
        return RequeueAfter(max(0.0, (new.renewal_time - p.now).total_seconds()))

    def _failed(
        self,
        status: IssuedCertificateStatus,
        *,
        error: str,
        generation: int,
        now: dt.datetime,
        retry: bool,
    ) -> IssuedCertificateStatus:
        """FAILED with `error`; with `retry`, tried again after the failure backoff
        (`renewal_time`)."""
        failures = status.failed_attempts + 1
        retry_at: dt.datetime | None = None
        if retry:
            delay = policies.retry_delay(failures, timing=self._timing, rand=self._rand())
            retry_at = now + dt.timedelta(seconds=delay)
        return status.model_copy(
            update={
                "state": State.FAILED,
                "error": error,
                "observed_generation": generation,
                "failed_attempts": failures,
                "renewal_time": retry_at,
            }
        )

    async def _send_csr(self, p: _Pass, raw: Obj, key_secret: KeySecret, attempt: int) -> None:
        material = key_secret.material
        published = await self._bus.publish(
            self._messages.csr_requested(p.key, raw, key_secret, attempt)
        )
        if attempt != material.attempt or material.requested_at is None:
            await self._objects.mark_sent(key_secret, attempt=attempt, at=p.now)
        self._sent[p.key] = (material.issuance, "csr.requested", attempt)
        log.info("csr.sent", attempt=attempt, duplicate=published.duplicate)

    async def _send_bounce(self, p: _Pass, raw: Obj) -> None:
        directive = p.spec.pod_bounce_directive
        assert directive is not None
        issuance = IssuedCertificateStatus.model_validate(raw.get("status") or {}).issuance_id
        assert issuance is not None
        await self._bus.publish(self._messages.bounce_requested(p.key, issuance, directive))
        self._sent[p.key] = (issuance, "bounce.requested", 0)
        log.info("bounce.requested", directive=f"{directive.namespace}/{directive.name}")

    async def _transition(
        self,
        p: _Pass,
        new: IssuedCertificateStatus,
        reason: str,
        message: str,
        then: Callable[[Obj], Awaitable[None]] | None = None,
        warning: str | None = None,
    ) -> Obj:
        """The one status write of this pass, and its Event and status.changed
        (`transitions.py`). Returns the object written."""
        return await self._transitions.write(
            p.key, p.raw, p.status, new, reason=reason, message=message, then=then, warning=warning
        )

    async def report_refused(self, desired: DesiredObject, error: str) -> None:
        """status.changed FAILED for a declaration this cluster refused (desired state hands
        it over): it cannot exist here, so it has no status of its own to write."""
        await self._transitions.report_refused(desired, error)


@dataclass(frozen=True, slots=True)
class _Pass:
    """What one pass gathered, handed to the method of its decision."""

    key: ObjectKey
    raw: Obj
    observed: Observed
    key_secret: KeySecret | None
    now: dt.datetime

    @property
    def status(self) -> IssuedCertificateStatus:
        return self.observed.status

    @property
    def spec(self) -> IssuedCertificateSpec:
        """The valid spec: every decision but `Fail` and `Wait` is made only with one."""
        assert self.observed.spec is not None
        return self.observed.spec


def _readable_status(raw: Obj) -> IssuedCertificateStatus:
    try:
        return IssuedCertificateStatus.model_validate(raw.get("status") or {})
    except ValidationError:
        return IssuedCertificateStatus()  # unreadable: start again, as from PENDING


__all__ = ["Reconciler"]
