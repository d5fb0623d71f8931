"""Prometheus metrics: one registry per service instance, served by the health server.

Every service builds its registry with `new_registry()` and passes it down to what observes
(the bus's consumers, the service's own metrics); `HealthServer` serves it at `/metrics`. A
registry per instance, not the library's global one, because tests run several services (and
several replicas of one) in one process: each scrape then sees one instance's figures, never a
neighbour's, and nothing is registered twice. In production one process is one instance, so
this is the default registry's behaviour with the process collectors added.

The names follow Prometheus conventions (`meshtrust_<service>_..._<unit>`, `_total` for
counters, `_timestamp_seconds` for instants as Unix time); labels are bounded sets (clusters,
objects, durables, fixed reason and outcome codes), never issuance ids. docs/metrics.md lists
them all.

Deliberately not here: the metrics themselves (each service's `metrics.py`, and
`shared.bus.metrics` for the consumers).
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    generate_latest,
)
from prometheus_client.registry import Collector

__all__ = ["CONTENT_TYPE_LATEST", "BoundedLabels", "CollectorRegistry", "new_registry", "render"]

DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
"""Seconds; from a signature's few milliseconds to a minute-long retry path."""
BOUNCE_BUCKETS = (0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
"""Seconds; a bounce waits for pods to be replaced and become ready."""


def new_registry(*, process: bool = True) -> CollectorRegistry:
    """A fresh registry; with `process`, the process, platform and GC figures every Prometheus
    client exports (`process_resident_memory_bytes`, ...), read at scrape time."""
    registry = CollectorRegistry(auto_describe=True)
    if process:
        collectors: Iterable[Collector] = (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR)
        for collector in collectors:
            registry.register(collector)
    return registry


def render(registry: CollectorRegistry) -> bytes:
    """The text exposition format (`CONTENT_TYPE_LATEST`)."""
    return generate_latest(registry)


class BoundedLabels:
    """Keeps a label's values to a bounded set: the first `limit` distinct values pass, later
    ones read as `other`. For values that come from outside (a reason code in a message), so
    that a bug or a hostile sender cannot grow a series per value."""

    def __init__(self, limit: int, *, known: Iterable[str] = ()) -> None:
        self._limit = limit
        self._seen: set[str] = set(known)

    def __call__(self, value: str) -> str:
        if value in self._seen:
            return value
        if len(self._seen) >= self._limit:
            return "other"
        self._seen.add(value)
        return value
