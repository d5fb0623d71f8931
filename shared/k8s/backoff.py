"""Backoff arithmetic: capped exponential delays with jitter, and a token bucket.

Pure and synchronous: the randomness and the clock are arguments, so every number this module
produces can be asserted in a table test. It never sleeps; the work queue and the informer do.

The shapes follow client-go's `workqueue` rate limiters: `ItemExponentialFailureRateLimiter`
(per key, `base * factor**failures`, capped), `BucketRateLimiter` (overall qps with a burst), and
`MaxOfRateLimiter` (the slower of the two wins). Unlike client-go we add jitter to the per-key
delay, so a fleet of keys that failed together does not retry in lockstep.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field

__all__ = [
    "BackoffPolicy",
    "ItemBackoff",
    "RateLimiter",
    "TokenBucket",
]


@dataclass(frozen=True, slots=True)
class BackoffPolicy:
    """Capped exponential backoff with symmetric jitter.

    The n-th consecutive failure (n = 0 for the first) waits
    `min(cap, base * factor**n)` scaled by a random factor in `[1 - jitter, 1 + jitter]`,
    and never more than `cap`.
    """

    base_seconds: float = 0.5
    """Delay after the first failure, in seconds. Half a second: long enough not to hammer an
    apiserver that just answered 500, short enough that one blip costs nothing visible."""

    factor: float = 2.0
    """Growth per consecutive failure (dimensionless). Doubling, as client-go and stamina do."""

    cap_seconds: float = 300.0
    """Longest delay, in seconds. Five minutes, cert-manager's cap: a broken object is retried
    a dozen times an hour, which is cheap and still heals promptly once fixed."""

    jitter: float = 0.2
    """Relative spread of each delay (fraction, 0..1). 20% de-synchronises keys that failed
    together without making one delay much longer than the policy says."""

    def __post_init__(self) -> None:
        if self.base_seconds < 0 or self.cap_seconds < 0:
            raise ValueError("backoff delays must be >= 0 seconds")
        if self.factor < 1:
            raise ValueError("backoff factor must be >= 1")
        if not 0 <= self.jitter <= 1:
            raise ValueError("backoff jitter must be within [0, 1]")

    def delay(self, failures: int, *, rand: float = 0.5) -> float:
        """Seconds to wait after `failures` earlier consecutive failures (0 = first failure).

        `rand` is a uniform sample in [0, 1); 0.5 means "no jitter" and makes this exact.
        """
        if failures < 0:
            raise ValueError("failures must be >= 0")
        # Stop multiplying once past the cap: avoids float overflow after ~1000 failures.
        raw = self.base_seconds
        for _ in range(failures):
            raw *= self.factor
            if raw >= self.cap_seconds:
                break
        capped = min(raw, self.cap_seconds)
        spread = 1.0 + self.jitter * (2.0 * rand - 1.0)
        return min(capped * spread, self.cap_seconds)


@dataclass(slots=True)
class ItemBackoff:
    """Per-key failure counts turned into delays (client-go's item exponential limiter)."""

    policy: BackoffPolicy = field(default_factory=BackoffPolicy)
    rand: Callable[[], float] = random.random
    _failures: dict[Hashable, int] = field(default_factory=dict)

    def when(self, key: Hashable) -> float:
        """Record one more failure of `key` and return how long to wait before retrying it."""
        n = self._failures.get(key, 0)
        self._failures[key] = n + 1
        return self.policy.delay(n, rand=self.rand())

    def failures(self, key: Hashable) -> int:
        """How many consecutive failures `key` has had since it was last forgotten."""
        return self._failures.get(key, 0)

    def forget(self, key: Hashable) -> None:
        """`key` succeeded (or was dropped): its next failure starts from the base delay."""
        self._failures.pop(key, None)


@dataclass(slots=True)
class TokenBucket:
    """An overall rate limit: `qps` tokens per second, at most `burst` saved up.

    `reserve(now)` takes one token and says how long the caller must wait for it (0 if one was
    available). Reservations queue up: ten callers at once on an empty bucket get delays of
    1/qps, 2/qps, ... as client-go's `BucketRateLimiter` (golang.org/x/time/rate) does.
    """

    qps: float = 10.0
    burst: int = 100
    _tokens: float | None = None
    _last: float | None = None

    def __post_init__(self) -> None:
        if self.qps <= 0 or self.burst < 1:
            raise ValueError("a token bucket needs qps > 0 and burst >= 1")

    def reserve(self, now: float) -> float:
        """Take one token at time `now` (seconds, any monotonic origin); return the wait."""
        if self._tokens is None or self._last is None:
            self._tokens, self._last = float(self.burst), now
        elapsed = max(0.0, now - self._last)
        self._tokens = min(float(self.burst), self._tokens + elapsed * self.qps)
        self._last = now
        self._tokens -= 1.0
        if self._tokens >= 0:
            return 0.0
        return -self._tokens / self.qps


@dataclass(slots=True)
class RateLimiter:
    """The work queue's requeue delay: the larger of per-key backoff and the overall bucket."""

    item: ItemBackoff = field(default_factory=ItemBackoff)
    bucket: TokenBucket | None = field(default_factory=TokenBucket)

    def when(self, key: Hashable, *, now: float) -> float:
        """Seconds until `key` may be retried after one more failure."""
        per_key = self.item.when(key)
        overall = self.bucket.reserve(now) if self.bucket is not None else 0.0
        return max(per_key, overall)

    def failures(self, key: Hashable) -> int:
        """Consecutive failures of `key` so far."""
        return self.item.failures(key)

    def forget(self, key: Hashable) -> None:
        """Reset `key`'s backoff (it succeeded or is gone)."""
        self.item.forget(key)
