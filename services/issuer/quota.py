"""Per-cluster issuance rate limit: a token bucket per cluster, in this process.

A cluster may have `burst` certificates signed at once, then one every `3600 / per_hour`
seconds. Only new signatures take a token: an answer sent again from the `meshtrust-issued`
record is the same certificate and costs nothing, and a denial costs nothing either. A CSR that
finds the bucket empty is denied `RateLimited` with the time a token will be there; the agent
re-sends it then (docs/agent.md).

The buckets are per process, deliberately: with n replicas each allows the rate, so the fleet
bound for one cluster is n x the rate (docs/issuer.md). Coordinating replicas (a KV counter with
compare-and-set) would put a bus round trip on every signature for a limit whose purpose is to
stop a flood, which n x the rate still does.

Thread-safe (the signing executor takes tokens); the clock is the caller's (`now`), so the
bucket is a pure function of the times it is given. A clock that goes back refills nothing.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import datetime, timedelta

__all__ = ["IssuanceQuota"]


@dataclass(slots=True)
class _Bucket:
    tokens: float
    at: datetime


class IssuanceQuota:
    """Token buckets by cluster: `take(cluster, now)` is None (a token taken) or the time the
    next token will be there."""

    def __init__(self, *, per_hour: float, burst: int) -> None:
        if per_hour <= 0 or burst < 1:
            raise ValueError("an issuance quota needs per_hour > 0 and burst >= 1")
        self._per_second = per_hour / 3600.0
        self._burst = float(burst)
        self._buckets: dict[str, _Bucket] = {}
        self._lock = threading.Lock()

    def take(
        self, cluster: str, now: datetime, *, rate: tuple[float, int] | None = None
    ) -> datetime | None:
        """`rate`: the cluster's own (per_hour, burst), from its ClusterRegistration, instead
        of the default; a bucket keeps its tokens when its rate changes (at most the burst)."""
        per_second, burst = self._per_second, self._burst
        if rate is not None:
            per_second, burst = rate[0] / 3600.0, float(rate[1])
        with self._lock:
            bucket = self._buckets.get(cluster)
            if bucket is None:
                bucket = self._buckets[cluster] = _Bucket(burst, now)
            elapsed = max(0.0, (now - bucket.at).total_seconds())
            bucket.tokens = min(burst, bucket.tokens + elapsed * per_second)
            bucket.at = max(bucket.at, now)
            if bucket.tokens >= 1.0:
                bucket.tokens -= 1.0
                return None
            wait = (1.0 - bucket.tokens) / per_second
            return bucket.at + timedelta(seconds=wait)
