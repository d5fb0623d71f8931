"""The consumers' metrics against a real nats-server: what each message's handling told the
server, redeliveries, messages in flight; two buses with registries of their own never mix."""

from __future__ import annotations

import asyncio

from integration.bus_harness import Recorder, all_events_consumer, running

from shared.bus import Bus, Delivery, NatsSettings
from shared.events import Event
from shared.runtime import PermanentError, TransientError
from shared.runtime.metrics import new_registry
from support.events import sample_events
from support.waiting import eventually

HANDLED = "meshtrust_bus_messages_handled_total"


async def test_outcomes_redeliveries_and_in_flight_are_counted_per_durable(
    nats_settings: NatsSettings,
) -> None:
    registry, elsewhere = new_registry(), new_registry()
    east, west, held = (sample_events(cluster)[0] for cluster in ("east", "west", "south"))
    release = asyncio.Event()

    async def behaviour(event: Event, delivery: Delivery) -> None:
        if event.cluster == "east" and delivery.num_delivered < 3:
            raise TransientError("not yet", retry_after=0.05)
        if event.cluster == "west":
            raise PermanentError("Refused", "never")
        if event.id == held.id:
            await release.wait()

    def value(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, {"durable": "metrics", **labels})

    async with (
        Bus.connect(nats_settings, registry=registry) as bus,
        Bus.connect(nats_settings, registry=elsewhere) as other,
    ):
        await bus.provision()
        recorder = Recorder(behaviour=behaviour)
        async with running(bus.consumer(all_events_consumer("metrics"), recorder)):
            for event in (east, west, held):
                await bus.publish(event)
            await eventually(
                lambda: value(HANDLED, outcome="ack") == 1.0, message="east acked at last"
            )
            await eventually(
                lambda: value("meshtrust_bus_messages_in_flight") == 1.0, message="one held"
            )
            assert value(HANDLED, outcome="nak") == 2.0
            assert value(HANDLED, outcome="term") == 1.0
            assert value("meshtrust_bus_redeliveries_total") == 2.0
            release.set()
            await eventually(lambda: value(HANDLED, outcome="ack") == 2.0, message="all acked")
            assert value("meshtrust_bus_messages_in_flight") == 0.0
        assert other.metrics is not bus.metrics
    assert elsewhere.get_sample_value(HANDLED, {"durable": "metrics", "outcome": "ack"}) is None
