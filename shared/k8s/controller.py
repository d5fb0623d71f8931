"""The controller runner: informers feed keys into a work queue, N workers reconcile them.

As in controller-runtime, reconcile is *level-based*: it gets an `ObjectKey`, never an event,
reads the current state (from the informers' caches or the API), decides, writes, and returns
what should happen next:

- `Done()`: nothing until the object (or something mapped to it) changes again.
- `RequeueAfter(seconds)`: look again then, e.g. when a certificate is due for renewal.
- raise `PermanentError` (`shared.runtime.errors`): the key cannot make progress until its input
  changes; it is not retried (the reconciler should have written the reason into status first).
- raise anything else (a `TransientError` such as `Transient`, a `Conflict`, a bug): rate-limited
  requeue, i.e. capped exponential backoff with jitter per key, honouring a `retry_after`
  (a server's Retry-After).

Every key is reconciled by at most one worker at a time (the queue guarantees it). `run()` waits
for every watched informer's first list (WaitForCacheSync), then runs the workers until cancelled
or `stop()`; `stop()` lets in-flight reconciles finish and returns, cancellation stops at once.

Not here: the informers' own tasks (the service's TaskGroup runs `informer.run()` beside
`controller.run()`), leader election, metrics.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field

import structlog

from shared.api.meta import ObjectKey
from shared.k8s.backoff import BackoffPolicy, ItemBackoff, RateLimiter, TokenBucket
from shared.k8s.errors import Conflict, KubeError
from shared.k8s.informer import Informer, InformerEvent
from shared.k8s.queue import QueueShutDown, WorkQueue
from shared.runtime.errors import PermanentError, TransientError

__all__ = [
    "Controller",
    "ControllerSettings",
    "Done",
    "ReconcileResult",
    "RequeueAfter",
]

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Done:
    """Reconciled; wait for the next change."""


@dataclass(frozen=True, slots=True)
class RequeueAfter:
    """Reconciled for now; look at the key again after `seconds`."""

    seconds: float

    def __post_init__(self) -> None:
        if self.seconds < 0:
            raise ValueError("RequeueAfter needs seconds >= 0")


ReconcileResult = Done | RequeueAfter
Reconcile = Callable[[ObjectKey], Awaitable[ReconcileResult]]


@dataclass(frozen=True, slots=True)
class ControllerSettings:
    """Concurrency and requeue rate limits of one controller."""

    workers: int = 2
    """Concurrent reconciles (of distinct keys), a count. Our reconciles mostly wait on the API
    and the bus; two keep one slow key from stalling the rest, more buys little on 2 cores."""

    backoff: BackoffPolicy = field(default_factory=BackoffPolicy)
    """Per-key delay after a failed reconcile: 0.5 s doubling to 5 min, 20% jitter (see
    `BackoffPolicy` for why)."""

    qps: float = 10.0
    """Overall requeue-after-failure rate, in keys per second. client-go's default bucket: keeps a
    mass failure (apiserver down) from becoming a retry storm when it comes back."""

    burst: int = 100
    """Failures requeued without the qps limit, a count. client-go's default."""


class Controller:
    """One reconcile function, its queue and workers, fed by any number of informers."""

    def __init__(
        self,
        *,
        name: str,
        reconcile: Reconcile,
        settings: ControllerSettings | None = None,
        clock: Callable[[], float] = time.monotonic,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self._settings = settings or ControllerSettings()
        if self._settings.workers < 1:
            raise ValueError("a controller needs at least one worker")
        self.name = name
        self._reconcile = reconcile
        limiter = RateLimiter(
            item=ItemBackoff(policy=self._settings.backoff, rand=rand),
            bucket=TokenBucket(qps=self._settings.qps, burst=self._settings.burst),
        )
        self.queue: WorkQueue[ObjectKey] = WorkQueue(rate_limiter=limiter, clock=clock)
        self._informers: list[Informer] = []
        self._log = log.bind(controller=name)

    def watch(
        self,
        informer: Informer,
        *,
        map_to: Callable[[InformerEvent], Iterable[ObjectKey]] | None = None,
    ) -> None:
        """Enqueue keys for every change `informer` sees: the object's own key by default, or
        the keys `map_to(event)` returns (e.g. the IssuedCertificate that owns a Secret)."""
        self._informers.append(informer)

        def enqueue(event: InformerEvent) -> None:
            keys = [event.key] if map_to is None else map_to(event)
            for key in keys:
                self.queue.add(key)

        informer.add_handler(enqueue)

    def stop(self) -> None:
        """Graceful stop: hand out no more keys; `run()` returns once in-flight reconciles end."""
        self.queue.shutdown()

    async def run(self) -> None:
        """Wait for the informers' caches, then reconcile with N workers until stopped."""
        for informer in self._informers:
            await informer.wait_synced()
        self._log.info("controller.started", workers=self._settings.workers)
        try:
            async with asyncio.TaskGroup() as tg:
                for n in range(self._settings.workers):
                    tg.create_task(self._worker(), name=f"{self.name}-worker-{n}")
        finally:
            self.queue.shutdown()
            self._log.info("controller.stopped")

    async def _worker(self) -> None:
        while True:
            try:
                key = await self.queue.get()
            except QueueShutDown:
                return
            try:
                await self.process(key)
            finally:
                self.queue.done(key)

    async def process(self, key: ObjectKey) -> None:
        """Reconcile `key` once and requeue it as the outcome says (the queue's `done()` is the
        caller's job). Public so tests and tools can drive one key by hand."""
        log_ = self._log.bind(key=str(key))
        try:
            result = await self._reconcile(key)
        except PermanentError as exc:
            self.queue.forget(key)
            log_.error("reconcile.terminal", error=str(exc))
            return
        except (TransientError, Conflict) as exc:
            delay = self.queue.add_rate_limited(key, at_least_seconds=exc.retry_after or 0.0)
            log_.info("reconcile.retrying", error=repr(exc), retry_in=round(delay, 3))
            return
        except KubeError as exc:
            delay = self.queue.add_rate_limited(key)
            log_.warning("reconcile.api_error", error=repr(exc), retry_in=round(delay, 3))
            return
        except Exception:
            # A bug or an unforeseen failure: keep the service alive, retry with backoff, and
            # make noise (controller-runtime does the same, minus the panic recovery).
            delay = self.queue.add_rate_limited(key)
            log_.exception("reconcile.failed", retry_in=round(delay, 3))
            return
        self.queue.forget(key)
        if isinstance(result, RequeueAfter):
            self.queue.add_after(key, result.seconds)
            log_.debug("reconcile.requeue_after", seconds=result.seconds)
