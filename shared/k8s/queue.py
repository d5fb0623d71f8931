"""A de-duplicating, rate-limited, delaying work queue of keys, as client-go's `workqueue`.

Guarantees (the same as client-go's `Type` + `DelayingQueue` + `RateLimitingQueue`):

- A key waiting in the queue is there once, however often it was added ("dirty" set).
- A key handed out by `get()` is *processing* until `done(key)`; adding it meanwhile marks it
  dirty but does not hand it out again, so no key is ever processed by two workers at once.
  `done()` re-queues it if it was added while processing.
- `add_after(key, s)` makes the key ready after `s` seconds; of several pending delays for one key
  the earliest wins. `add_rate_limited(key)` delays by the rate limiter (per-key capped
  exponential backoff with jitter, and an overall token bucket); `forget(key)` resets it.

The queue is bounded by the number of distinct keys (one entry per key), which is the back-pressure
a level-triggered controller needs: a burst of a million events on a thousand objects is a
thousand entries.

It does not run anything itself and has no background task: delays are honoured by `get()`,
which sleeps until the earliest delayed key is due or a new key arrives. The clock is injected.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections import deque
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

from shared.k8s.backoff import RateLimiter

__all__ = ["QueueShutDown", "WorkQueue"]

K = TypeVar("K", bound=Hashable)


class QueueShutDown(Exception):
    """`get()` on a queue that was shut down: the worker should return."""


class WorkQueue(Generic[K]):
    """See the module docstring. Not thread-safe; one event loop."""

    def __init__(
        self,
        *,
        rate_limiter: RateLimiter | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._limiter = rate_limiter if rate_limiter is not None else RateLimiter()
        self._clock = clock
        self._ready: deque[K] = deque()
        self._dirty: set[K] = set()
        self._processing: set[K] = set()
        # Delayed keys: the heap may hold stale entries; `_waiting` has the live due time.
        self._heap: list[tuple[float, int, K]] = []
        self._waiting: dict[K, float] = {}
        self._seq = itertools.count()
        self._wakeup = asyncio.Event()
        self._shutting_down = False

    # -- adding -------------------------------------------------------------------------------

    def add(self, key: K) -> None:
        """Make `key` ready now (no-op if it is already waiting; deferred if processing)."""
        if self._shutting_down or key in self._dirty:
            return
        self._dirty.add(key)
        if key in self._processing:
            return
        self._ready.append(key)
        self._wakeup.set()

    def add_after(self, key: K, delay_seconds: float) -> None:
        """Make `key` ready in `delay_seconds` (now if <= 0). An earlier pending delay wins."""
        if self._shutting_down:
            return
        if delay_seconds <= 0:
            self.add(key)
            return
        due = self._clock() + delay_seconds
        current = self._waiting.get(key)
        if current is not None and current <= due:
            return
        self._waiting[key] = due
        heapq.heappush(self._heap, (due, next(self._seq), key))
        self._wakeup.set()

    def add_rate_limited(self, key: K, *, at_least_seconds: float = 0.0) -> float:
        """Requeue `key` after its next backoff delay (and after `at_least_seconds`, e.g. a
        server's Retry-After). Returns the delay chosen, in seconds."""
        delay = max(self._limiter.when(key, now=self._clock()), at_least_seconds)
        self.add_after(key, delay)
        return delay

    def forget(self, key: K) -> None:
        """`key` succeeded: its next failure starts from the base delay again."""
        self._limiter.forget(key)

    def num_requeues(self, key: K) -> int:
        """Consecutive rate-limited requeues of `key` since it was last forgotten."""
        return self._limiter.failures(key)

    # -- taking -------------------------------------------------------------------------------

    def _promote_due(self) -> float | None:
        """Move due delayed keys to the ready queue; return seconds until the next one is due."""
        now = self._clock()
        while self._heap:
            due, _, key = self._heap[0]
            if self._waiting.get(key) != due:
                heapq.heappop(self._heap)  # superseded by an earlier add_after
                continue
            if due > now:
                return due - now
            heapq.heappop(self._heap)
            del self._waiting[key]
            self.add(key)
        return None

    def try_get(self) -> K | None:
        """The next ready key, marked processing, or None if none is ready now."""
        if self._shutting_down:
            raise QueueShutDown
        self._promote_due()
        if not self._ready:
            return None
        key = self._ready.popleft()
        self._dirty.discard(key)
        self._processing.add(key)
        return key

    async def get(self) -> K:
        """Wait for the next ready key and mark it processing. Call `done(key)` afterwards.

        Raises QueueShutDown once the queue is shut down (even if keys are still queued).
        Cancellation-safe: a cancelled `get()` takes nothing.
        """
        while True:
            key = self.try_get()
            if key is not None:
                return key
            wait = self._promote_due()
            # No await between the check above and clear(): no add() can slip in between.
            self._wakeup.clear()
            try:
                async with asyncio.timeout(wait):
                    await self._wakeup.wait()
            except TimeoutError:
                pass

    def done(self, key: K) -> None:
        """Processing of `key` finished; if it was added meanwhile, it is ready again."""
        self._processing.discard(key)
        if key in self._dirty and not self._shutting_down:
            self._ready.append(key)
            self._wakeup.set()

    # -- lifecycle and introspection ----------------------------------------------------------

    def shutdown(self) -> None:
        """Stop handing out keys: every `get()`, waiting or future, raises QueueShutDown.
        Keys being processed may still be passed to `done()`."""
        self._shutting_down = True
        self._wakeup.set()

    @property
    def shutting_down(self) -> bool:
        """Whether `shutdown()` was called."""
        return self._shutting_down

    def __len__(self) -> int:
        """Keys ready now (not counting delayed or processing ones)."""
        return len(self._ready)

    @property
    def processing(self) -> frozenset[K]:
        """Keys handed out and not yet `done()`."""
        return frozenset(self._processing)

    @property
    def delayed(self) -> int:
        """Keys waiting for a delay to pass."""
        return len(self._waiting)

    def due_in(self, key: K) -> float | None:
        """Seconds until delayed `key` becomes ready, or None if it is not delayed."""
        due = self._waiting.get(key)
        return None if due is None else max(0.0, due - self._clock())
