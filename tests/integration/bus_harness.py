"""Running a consumer in a test, and recording what its handler saw."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from shared.bus import Bus, Consumer, ConsumerSettings, Delivery
from shared.events import Event, any_cluster


@dataclass
class Recorder:
    """A handler that records events; `behaviour` may raise or block to test outcomes."""

    behaviour: Callable[[Event, Delivery], Awaitable[None]] | None = None
    events: list[Event] = field(default_factory=list)
    deliveries: list[Delivery] = field(default_factory=list)
    by_issuance: Counter[str] = field(default_factory=Counter)

    async def __call__(self, event: Event, delivery: Delivery) -> None:
        self.events.append(event)
        self.deliveries.append(delivery)
        if self.behaviour is not None:
            await self.behaviour(event, delivery)
        self.by_issuance[event.issuance] += 1


def all_events_consumer(durable: str = "test", **overrides: object) -> ConsumerSettings:
    options: dict[str, object] = {
        "durable": durable,
        "filter_subjects": ("meshtrust.v1.>",),
        "fetch_timeout": 0.2,
        "retry_initial": 0.1,
        "retry_max": 0.5,
    }
    options.update(overrides)
    return ConsumerSettings(**options)  # type: ignore[arg-type]


@asynccontextmanager
async def running(consumer: Consumer) -> AsyncIterator[asyncio.Event]:
    """Run `consumer` for the body; on exit set stop and wait for it to return."""
    stop = asyncio.Event()
    async with asyncio.TaskGroup() as group:
        group.create_task(consumer.run(stop), name=consumer.name)
        try:
            yield stop
        finally:
            stop.set()


async def consumer_info(bus: Bus, durable: str) -> object:
    return await bus.connection.js.consumer_info(bus.settings.stream, durable)


__all__ = ["Recorder", "all_events_consumer", "any_cluster", "consumer_info", "running"]
