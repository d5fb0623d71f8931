"""Serving every cluster's events fairly: a durable per cluster, read only while it has work.

One durable over every cluster's events delivers them in stream order: a flood of one cluster
sits in the stream ahead of another cluster's event, and no scheduling of what was already
fetched can reach past it. So each cluster has a durable of its own (`shared.bus.fleet`, with a
small `max_ack_pending`: the most of one cluster's backlog held at once across every replica),
and `FairConsumers` serves them:

- **Only clusters with work cost anything.** A cluster's `Consumer` runs only while the cluster
  has something to read, and stops once nothing of it was delivered for `idle_after` seconds
  and its durable has nothing pending or unacknowledged (one request to ask).
  What wakes it is a doorbell: a plain subscription to the events' subject of every cluster (in
  the hub, every publish reaches it too, across the clusters' imports; one message, one
  dictionary look-up). A doorbell missed (while reconnecting, or before this replica started)
  is caught by a sweep every `sweep_interval` seconds, which lists the stream's consumers once
  (a few paged requests for a thousand clusters) and wakes every cluster whose durable has
  messages pending or unacknowledged (a message nak'ed for later waits there too).
- **In turn.** Handlers wait for one of `in_flight` slots, and the slots go to waiters in the
  order they asked (`asyncio.Semaphore` is first come, first served). A cluster holds at most
  its consumer's `max_in_flight` messages, so an event of a quiet cluster waits behind at most
  that many of each busy cluster: its wait does not grow with any flood's size.

The consumers keep every guarantee of `shared.bus.consuming` (acknowledgement after the
handler, completion records, keep-alive, self-healing through the hub's `FleetConsumers`):
they are the same `Consumer`, run for a while. Several replicas serve the same durables; the
server shares their messages among them.

Deliberately not here: which durable a cluster has and who makes it (`prepare`, the caller's:
the hub's `FleetConsumers.ensure`), and any order across clusters beyond the slots' queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable

import nats.errors
import nats.js.errors
from nats.aio.msg import Msg

from shared.bus.bus import Bus
from shared.bus.connection import BusError
from shared.bus.consuming import Consumer
from shared.bus.durables import ConsumerSettings, Delivery, Handler
from shared.events import Event, EventType, any_cluster, check_cluster_name
from shared.runtime.concurrency import pause, raise_if_cancelled
from shared.runtime.errors import TransientError
from shared.runtime.logging import get_logger

__all__ = ["FairConsumers"]

log = get_logger(__name__)

DEFAULT_IDLE_AFTER = 10.0
"""Seconds without a delivery (or a doorbell) after which a cluster's consumer stops."""
DEFAULT_SWEEP = 30.0
"""Seconds between sweeps for work no doorbell announced."""
_LIST_PAGE = 256
"""Consumers per page of JetStream's consumer list (a shorter page is the last)."""


class FairConsumers:
    """The consumers of one event type, a durable per cluster, served in turn; a Component."""

    def __init__(
        self,
        bus: Bus,
        handler: Handler,
        *,
        event: EventType,
        settings_for: Callable[[str], ConsumerSettings],
        prepare: Callable[[str], Awaitable[None]],
        in_flight: int,
        idle_after: float = DEFAULT_IDLE_AFTER,
        sweep_interval: float = DEFAULT_SWEEP,
    ) -> None:
        """`settings_for(cluster)`: that cluster's consumer (its durable, at most how many
        messages held); `prepare(cluster)`: make its durable if missing (`TransientError` when
        JetStream cannot be asked); `in_flight`: handlers running at once, all clusters."""
        self.name = f"fair:{event.value}"
        self._bus = bus
        self._handler = handler
        self._event = event
        self._settings_for = settings_for
        self._prepare = prepare
        self._slots = asyncio.Semaphore(in_flight)
        self._idle_after = idle_after
        self._sweep_interval = sweep_interval
        self._serving: set[str] = set()
        self._rung: dict[str, float] = {}
        """When each cluster's doorbell last rang (monotonic)."""
        self._delivered: dict[str, float] = {}
        """When each serving cluster last had a message delivered (monotonic)."""
        self._group: asyncio.TaskGroup | None = None
        self._stop = asyncio.Event()
        self.listening = asyncio.Event()
        """Set once the doorbell is subscribed at the server: from then on no event is missed."""

    @property
    def serving(self) -> frozenset[str]:
        """The clusters whose consumer runs now."""
        return frozenset(self._serving)

    async def run(self, stop: asyncio.Event) -> None:
        self._stop = stop

        async def rang(msg: Msg) -> None:
            # meshtrust.v1.<cluster>.<event>
            parts = msg.subject.split(".")
            if len(parts) > 2:
                self.ring(parts[2])

        nc = self._bus.connection.nc
        sub = await nc.subscribe(any_cluster(self._event), cb=rang)
        try:
            with contextlib.suppress(nats.errors.Error, TimeoutError):
                await nc.flush()  # the sweep catches anything stored before the subscription
            self.listening.set()
            async with asyncio.TaskGroup() as group:
                self._group = group
                group.create_task(self._sweep(stop), name=f"{self.name}:sweep")
                await stop.wait()
        finally:
            self._group = None
            with contextlib.suppress(nats.errors.Error):
                await sub.unsubscribe()

    def ring(self, cluster: str) -> None:
        """`cluster` has (or may have) something to read: serve it, if not served already."""
        try:
            check_cluster_name(cluster)
        except ValueError:
            return  # not a subject any cluster's durable reads
        self._rung[cluster] = time.monotonic()
        if cluster in self._serving or self._group is None or self._stop.is_set():
            return
        self._serving.add(cluster)
        self._group.create_task(self._serve(cluster), name=f"{self.name}:{cluster}")

    async def _serve(self, cluster: str) -> None:
        """Run `cluster`'s consumer until it is idle (or stop); again if rung meanwhile."""
        try:
            while not self._stop.is_set():
                started = time.monotonic()
                try:
                    await self._prepare(cluster)
                except TransientError as exc:
                    log.warning("cluster consumer not ready", cluster=cluster, error=exc.message)
                    raise_if_cancelled()
                    await pause(self._stop, 1.0)
                    continue
                consumer = self._bus.consumer(self._settings_for(cluster), self._fair(cluster))
                own = asyncio.Event()
                async with asyncio.TaskGroup() as group:
                    running = group.create_task(self._consume(consumer, own, cluster))
                    idle_at = await self._until_idle(cluster, started, running)
                    own.set()
                if self._rung.get(cluster, 0.0) < idle_at:
                    return  # else rung after it was judged idle: serve it again
        finally:
            self._serving.discard(cluster)
            self._delivered.pop(cluster, None)

    async def _consume(self, consumer: Consumer, own: asyncio.Event, cluster: str) -> None:
        try:
            await consumer.run(own)
        except BusError as exc:
            # Its next doorbell or the sweep tries again; other clusters go on meanwhile.
            log.warning("cluster consumer failed", cluster=cluster, error=str(exc))

    async def _until_idle(self, cluster: str, started: float, running: asyncio.Task[None]) -> float:
        """Return when nothing was delivered to or rung for `cluster` for `idle_after`
        seconds and its durable has nothing waiting, when `running` ended, or at stop: the
        moment it was judged so (monotonic; a doorbell after it is served again)."""
        stopped = asyncio.ensure_future(self._stop.wait())
        try:
            while not stopped.done() and not running.done():
                last = max(started, self._rung.get(cluster, 0.0), self._delivered.get(cluster, 0.0))
                judged = time.monotonic()
                left = last + self._idle_after - judged
                if left <= 0:
                    if not await self._still_waiting(cluster):
                        return judged
                    started = time.monotonic()  # another idle period: a delivery is due
                    continue
                await asyncio.wait(
                    (running, stopped), timeout=left, return_when=asyncio.FIRST_COMPLETED
                )
            return time.monotonic()
        finally:
            stopped.cancel()

    async def _still_waiting(self, cluster: str) -> bool:
        """Whether `cluster`'s durable still has messages to deliver: unacknowledged ones come
        back (a nak's delay, another replica's crash), and no doorbell rings for them."""
        durable = self._settings_for(cluster).durable
        try:
            info = await self._bus.connection.js.consumer_info(self._bus.settings.stream, durable)
        except nats.js.errors.NotFoundError:
            return False
        except (nats.errors.Error, TimeoutError):
            return True  # cannot tell: keep serving, ask again after another idle period
        return bool(info.num_pending or info.num_ack_pending)

    def _fair(self, cluster: str) -> Handler:
        async def handle(event: Event, delivery: Delivery) -> None:
            self._delivered[cluster] = time.monotonic()
            async with self._slots:
                await self._handler(event, delivery)

        return handle

    async def _sweep(self, stop: asyncio.Event) -> None:
        """Wake every cluster whose durable has messages waiting: at start, then periodically."""
        while not stop.is_set():
            try:
                for cluster in await self._waiting():
                    self.ring(cluster)
            except (nats.errors.Error, TimeoutError) as exc:
                log.warning("sweep for waiting events failed", error_type=type(exc).__name__)
            raise_if_cancelled()  # nats-py's request may have swallowed it
            await pause(stop, self._sweep_interval)

    async def _waiting(self) -> list[str]:
        """The clusters whose durable has messages pending or unacknowledged."""
        js, stream = self._bus.connection.js, self._bus.settings.stream
        waiting: list[str] = []
        offset = 0
        while True:
            page = await js.consumers_info(stream, offset=offset or None)
            for info in page:
                cluster = self._cluster_of(info.name or "")
                if cluster is not None and (info.num_pending or info.num_ack_pending):
                    waiting.append(cluster)
            if len(page) < _LIST_PAGE:
                return waiting
            offset += len(page)

    def _cluster_of(self, durable: str) -> str | None:
        """The cluster whose durable of this kind `durable` is, if it is one."""
        _, _, cluster = durable.partition("-")
        try:
            ours = bool(cluster) and self._settings_for(cluster).durable == durable
        except ValueError:  # not a cluster name: another kind of consumer
            return None
        return cluster if ours else None
