"""Bus handlers: `csr.requested` (authorise, sign, answer) and `status.changed` (mirror).

Both are called by `shared.bus` consumers, which ack when the handler returns, nak on
`TransientError`, and terminate on `PermanentError` (invalid messages never get here: the codec
terminates them). Both are idempotent, as redeliveries require. They are thin: which event,
which order, then the procedure: `flood.FloodGate` (a cluster over its rate is denied at once),
`claims.Claims` (one replica at a time per issuance), `signing.CsrSigning` (authorise and sign,
answered through `answers.Answers`) and `mirroring.StatusMirror` (reports of one declaration
folded into one write; the decision in `mirror.py`).
"""

from __future__ import annotations

from collections.abc import Mapping
from concurrent.futures import Executor
from typing import Any

from services.issuer.claims import Claims
from services.issuer.flood import FloodGate, NotingAnswers
from services.issuer.issued import issued_key
from services.issuer.metrics import IssuerMetrics
from services.issuer.mirroring import StatusMirror
from services.issuer.registrations import Registrations
from services.issuer.rotating import Rotations
from services.issuer.settings import IssuerSettings
from services.issuer.signer import SigningCAs
from services.issuer.signing import CsrSigning
from shared.api.meta import ObjectKey
from shared.bus import Bucket, Bus, Delivery
from shared.bus.ledger import Ledger
from shared.events import CsrRequested, Event, StatusChanged
from shared.k8s import EventRecorder, KubeClient
from shared.k8s.informer import Informer
from shared.runtime import PermanentError, get_logger
from shared.runtime.clock import Clock, utcnow
from shared.runtime.concurrency import InFlight
from shared.runtime.locks import KeyedLocks

__all__ = ["MIRROR_YIELD_SECONDS", "CsrHandler", "StatusHandler"]

log = get_logger(__name__)

MIRROR_YIELD_SECONDS = 0.05
"""The longest a status report waits for CSRs in flight: a few signatures' time.

A `csr.requested` and the `status.changed` REQUESTED the agent sends right after it arrive
together, and both run on this one event loop (and the management API server). The mirror is
bookkeeping; the CSR is the issuance's critical path. `StatusHandler` therefore waits until no
CSR is in flight (the `CsrHandler`'s `InFlight`), for at most this long: a priority, never a
stall (under a steady stream of CSRs each report waits that long, and reports are handled
`status_in_flight` at a time)."""


class CsrHandler:
    """Handles `csr.requested` from every cluster (each cluster's durable `csr-<cluster>`)."""

    def __init__(
        self,
        *,
        settings: IssuerSettings,
        bus: Bus,
        kube: KubeClient,
        issued: Bucket,
        ledger: Ledger,
        executor: Executor,
        signing_cas: SigningCAs,
        declarations: Informer | None = None,
        in_flight: InFlight | None = None,
        clock: Clock = utcnow,
        metrics: IssuerMetrics | None = None,
        registrations: Registrations | None = None,
        rotations: Rotations | None = None,
        roots: Bucket | None = None,
    ) -> None:
        self._in_flight = in_flight or InFlight()
        self._issuances: KeyedLocks[str] = KeyedLocks()
        self._claims = Claims(
            issued=issued,
            instance=settings.instance,
            lease=settings.claim_lease,
            clock=clock,
            metrics=metrics,
        )
        answers = NotingAnswers(
            settings=settings,
            bus=bus,
            issued=issued,
            ledger=ledger,
            clock=clock,
            metrics=metrics,
            claims=self._claims,
            cross_signed=rotations.cross_signed if rotations is not None else None,
        )
        self._gate = FloodGate(issued=issued, answers=answers, clock=clock)
        self._signing = CsrSigning(
            settings=settings,
            kube=kube,
            issued=issued,
            executor=executor,
            cas=signing_cas,
            answers=answers,
            declarations=declarations,
            clock=clock,
            registrations=registrations,
            rotations=rotations,
            roots=roots,
        )

    async def __call__(self, event: Event, delivery: Delivery) -> None:
        if not isinstance(event, CsrRequested):
            raise PermanentError("UnexpectedType", f"the issuer does not handle {event.type}")
        key = issued_key(event.cluster, event.issuance)
        # Copies of one issuance (a redelivery, the agent's re-send) handled at once in this
        # process wait for each other: the first signs, the others answer from its record.
        # Across replicas the issuance's claim does the same (`claims.py`); a claim of this
        # replica's name found while holding the lock is no living copy's, so it is taken.
        with self._in_flight.held():
            async with self._issuances.hold(key):
                # A cluster known to be over its rate is denied before any expensive work.
                if not await self._gate.answered(event, key):
                    await self._claims.run(event, key, lambda: self._signing.handle(event, key))


class StatusHandler:
    """Mirrors `status.changed` onto the management IssuedCertificate (consumer
    `issuer-status`); acks only after the status write succeeded."""

    def __init__(
        self,
        *,
        settings: IssuerSettings,
        kube: KubeClient,
        recorder: EventRecorder,
        declarations: Informer | None = None,
        in_flight: InFlight | None = None,
    ) -> None:
        self._settings = settings
        self._declarations = declarations
        """The issuer's IssuedCertificate informer: its copy saves the read before the write
        (the write carries its resourceVersion: a stale copy is a 409, then read fresh)."""
        self._in_flight = in_flight
        """The CsrHandler's count: a report waits (briefly) for CSRs being signed."""
        self.mirror = StatusMirror(kube, recorder=recorder, cached=self._cached)

    async def __call__(self, event: Event, delivery: Delivery) -> None:
        if not isinstance(event, StatusChanged):
            raise PermanentError(
                "UnexpectedType", f"the status mirror does not handle {event.type}"
            )
        if self._in_flight is not None:
            await self._in_flight.none_within(MIRROR_YIELD_SECONDS)
        if not self._settings.is_cluster(event.cluster):
            log.info("status of an unregistered cluster ignored", name=event.data.name)
            return
        await self.mirror.mirror(event)

    def _cached(self, key: ObjectKey) -> Mapping[str, Any] | None:
        if self._declarations is None:
            return None
        return self._declarations.get(key)
