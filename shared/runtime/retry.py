"""The one retry helper: capped, jittered exponential backoff, only on the errors named.

A thin layer over `stamina`, which brings the attempt and time caps, jitter, instrumentation and
a switch for tests (`stamina.set_testing(True)` removes the waits). Only the exception types in
`on` are retried; everything else surfaces at once, as trio teaches.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import stamina

T = TypeVar("T")


@dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    """How long and how often to retry. Units are seconds."""

    attempts: int = 10
    """At most this many calls in total (the first one included); 0 means no cap."""
    timeout: float = 30.0
    """Give up once this much time has passed since the first call; 0 means no cap."""
    wait_initial: float = 0.05
    """Wait before the second call; it doubles with each attempt ..."""
    wait_max: float = 2.0
    """... up to this cap ..."""
    wait_jitter: float = 0.25
    """... plus up to this much random jitter, so that many retrying clients do not align."""


async def retry(
    fn: Callable[[], Awaitable[T]],
    *,
    on: type[Exception] | tuple[type[Exception], ...],
    policy: RetryPolicy,
) -> T:
    """Await `fn()` until it returns, retrying only on `on`; the last error is re-raised."""
    async for attempt in stamina.retry_context(
        on=on,
        attempts=policy.attempts or None,
        timeout=policy.timeout or None,
        wait_initial=policy.wait_initial,
        wait_max=policy.wait_max,
        wait_jitter=policy.wait_jitter,
        wait_exp_base=2,
    ):
        with attempt:
            return await fn()
    raise AssertionError("unreachable: stamina re-raises the last error")  # pragma: no cover
