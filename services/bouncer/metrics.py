"""The bouncer's metrics (docs/metrics.md): how long bounces take and how they end.

Both are observed once per answer: when a `bounce.completed` is stored in the stream. A request
delivered again (after a lost ack, or a crash) is answered again from the directive's record, and
counted again (each answer is a message of its own: `BounceCompleted.dedupe_key`); plus one
`retry` per delivery that ended in a transient failure (nak). Labels: `cluster` (this
bouncer's) and `outcome` (`completed`, `failed`, `retry`); never an issuance id.
"""

from __future__ import annotations

import datetime as dt
from typing import Literal

from prometheus_client import CollectorRegistry, Counter, Histogram

from shared.runtime.metrics import BOUNCE_BUCKETS

Outcome = Literal["completed", "failed", "retry"]


class BouncerMetrics:
    def __init__(self, registry: CollectorRegistry, *, cluster: str) -> None:
        self._cluster = cluster
        self.duration = Histogram(
            "meshtrust_bouncer_bounce_duration_seconds",
            "From a bounce.requested event's time (set by the agent) to a bounce.completed "
            "answering it stored, whatever the outcome.",
            ["cluster"],
            buckets=BOUNCE_BUCKETS,
            registry=registry,
        )
        self.bounces = Counter(
            "meshtrust_bouncer_bounces",
            "Bounce requests answered, by outcome: completed, failed (answered with an error); "
            "retry: a delivery that failed transiently and comes back.",
            ["cluster", "outcome"],
            registry=registry,
        )

    def finished(self, *, failed: bool, requested: dt.datetime, now: dt.datetime) -> None:
        outcome: Outcome = "failed" if failed else "completed"
        self.bounces.labels(self._cluster, outcome).inc()
        seconds = max(0.0, (now - requested).total_seconds())
        self.duration.labels(self._cluster).observe(seconds)

    def retried(self) -> None:
        self.bounces.labels(self._cluster, "retry").inc()
