"""The bus handler for `bounce.requested`: bounce, then answer with `bounce.completed`.

The handler does the whole bounce itself (it can take minutes; the consumer keeps the message
alive with `in_progress()`), because the record in the directive's status already makes a
redelivered request resume where the last one stopped: a separate controller would only move
that state into memory. The consumer acknowledges only after the handler returned, and the
handler returns only after the outcome is recorded and `bounce.completed` is stored in the
stream. Outcomes:

| what happened                                   | to the bus                                 |
|-------------------------------------------------|--------------------------------------------|
| bounced (or already bounced) every selector     | `bounce.completed`, pods per selector; ack |
| it cannot finish (deadline, missing, malformed) | `bounce.completed` with `error`; ack       |
| Kubernetes or NATS unwell                       | `TransientError`: nak, redelivery resumes  |
| an event that is not ours                       | `PermanentError`: term                     |

Deliberately not here: any decision about pods (bounce.py, policies.py).
"""

from __future__ import annotations

from typing import Protocol

import structlog

from services.bouncer.bounce import Bouncer
from services.bouncer.metrics import BouncerMetrics
from shared.bus import Delivery, Published
from shared.events import (
    BounceCompleted,
    BounceCompletedData,
    BounceRequested,
    Envelope,
    Event,
)
from shared.runtime import PermanentError, TransientError, get_logger
from shared.runtime.clock import utcnow

log = get_logger(__name__)

MAX_ERROR_CHARS = 4096
"""`BounceCompletedData.error` is at most this long (the event's `Message` type)."""


class Publisher(Protocol):
    async def publish(self, event: Envelope) -> Published: ...


class BounceRequestHandler:
    """Handles `bounce.requested` of one cluster (a `shared.bus.Handler`)."""

    def __init__(
        self,
        *,
        bouncer: Bouncer,
        publisher: Publisher,
        cluster: str,
        source: str,
        metrics: BouncerMetrics | None = None,
    ) -> None:
        self._metrics = metrics
        self._bouncer = bouncer
        self._publisher = publisher
        self._cluster = cluster
        self._source = source

    async def __call__(self, event: Event, delivery: Delivery) -> None:
        if not isinstance(event, BounceRequested):
            raise PermanentError("UnexpectedEvent", f"the bouncer does not handle {event.type}")
        if event.cluster != self._cluster:
            # The consumer's filter makes this impossible unless it is misconfigured.
            raise PermanentError(
                "WrongCluster", f"this bouncer serves {self._cluster}, not {event.cluster}"
            )
        try:
            await self._handle(event, delivery)
        except TransientError:
            if self._metrics is not None:
                self._metrics.retried()
            raise

    async def _handle(self, event: BounceRequested, delivery: Delivery) -> None:
        data = event.data
        with structlog.contextvars.bound_contextvars(
            directive=f"{data.directive.namespace}/{data.directive.name}"
        ):
            outcome = await self._bouncer.bounce(
                directive=data.directive,
                issued_certificate=data.issued_certificate,
                issuance=event.issuance,
            )
            error = outcome.error
            if error is not None and len(error) > MAX_ERROR_CHARS:
                error = error[: MAX_ERROR_CHARS - 1] + "…"
            completed = BounceCompleted(
                source=self._source,
                cluster=self._cluster,
                issuance=event.issuance,
                trace=event.trace,
                data=BounceCompletedData(
                    directive=data.directive,
                    issued_certificate=data.issued_certificate,
                    selectors=outcome.selectors,
                    error=error,
                ),
            )
            # A `PublishError` (a TransientError naming bounce.completed) naks: the record
            # stays, and the redelivered request finds everything done and publishes again
            # (deduplicated by the issuance's Nats-Msg-Id).
            published = await self._publisher.publish(completed)
            if self._metrics is not None:
                self._metrics.finished(failed=error is not None, requested=event.time, now=utcnow())
            log.info(
                "bounce.completed_published",
                error=error,
                selectors=len(outcome.selectors),
                duplicate=published.duplicate,
                redelivered=delivery.num_delivered > 1,
            )
