"""`shared.bus.fairness.FairConsumers` on a real nats-server: a durable per cluster, served while
it has work, handlers in turn.

The durables are the hub's CSR durables (`shared.bus.fleet.csr_consumer`), made here as the
fleet makes them; the events are CSRs of the sample set, one issuance each.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from shared.bus import Bus, ConsumerSettings, Delivery
from shared.bus.fairness import FairConsumers
from shared.bus.fleet import csr_consumer
from shared.events import CsrRequested, Event, EventType, new_issuance_id
from shared.runtime.errors import TransientError
from support.events import sample_events
from support.waiting import eventually


def csr(cluster: str) -> CsrRequested:
    (event,) = [e for e in sample_events(cluster) if e.type == EventType.CSR_REQUESTED]
    assert isinstance(event, CsrRequested)
    return event.model_copy(update={"issuance": new_issuance_id()})


def settings_for(per_cluster: int) -> object:
    def make(cluster: str) -> ConsumerSettings:
        return csr_consumer(cluster).consumer_settings(
            provision=False, batch=per_cluster, max_in_flight=per_cluster, fetch_timeout=0.2
        )

    return make


@asynccontextmanager
async def serving(bus: Bus, fair: FairConsumers) -> AsyncIterator[FairConsumers]:
    stop = asyncio.Event()
    async with asyncio.TaskGroup() as group:
        group.create_task(fair.run(stop))
        await fair.listening.wait()
        try:
            yield fair
        finally:
            stop.set()


def fair_consumers(bus: Bus, handler: object, *, per_cluster: int, in_flight: int) -> FairConsumers:
    async def prepare(cluster: str) -> None:
        await bus.connection.js.add_consumer("MESHTRUST", csr_consumer(cluster).config())

    return FairConsumers(
        bus,
        handler,  # type: ignore[arg-type]
        event=EventType.CSR_REQUESTED,
        settings_for=settings_for(per_cluster),  # type: ignore[arg-type]
        prepare=prepare,
        in_flight=in_flight,
        idle_after=0.3,
        sweep_interval=60.0,  # never within a test: what is served here was rung for
    )


async def test_a_quiet_clusters_event_is_handled_while_a_busy_clusters_backlog_waits(
    bus: Bus,
) -> None:
    release = asyncio.Event()
    handled: Counter[str] = Counter()

    async def handler(event: Event, delivery: Delivery) -> None:
        if event.cluster == "east":
            await release.wait()  # east's handlers hold their slots until released
        handled[event.cluster] += 1

    fair = fair_consumers(bus, handler, per_cluster=2, in_flight=4)
    async with serving(bus, fair):
        for _ in range(50):
            await bus.publish(csr("east"))
        await bus.publish(csr("west"))  # behind all of east's in the stream
        await eventually(lambda: handled["west"] == 1, message="west's event handled")
        assert handled["east"] == 0, "west did not wait for east's backlog"
        release.set()
        await eventually(lambda: handled["east"] == 50, message="east's backlog handled")
        await eventually(lambda: not fair.serving, message="both consumers stopped when idle")


async def test_an_event_naked_for_later_comes_back_though_its_cluster_went_quiet(
    bus: Bus,
) -> None:
    deliveries: list[int] = []

    async def handler(event: Event, delivery: Delivery) -> None:
        deliveries.append(delivery.num_delivered)
        if delivery.num_delivered == 1:
            raise TransientError("not yet", retry_after=1.0)  # longer than idle_after

    fair = fair_consumers(bus, handler, per_cluster=2, in_flight=4)
    async with serving(bus, fair):
        await bus.publish(csr("east"))
        await eventually(lambda: deliveries == [1, 2], message="the event delivered again")
        await eventually(lambda: not fair.serving, message="the consumer stopped when done")
