"""A short ack wait: handlers in progress are kept alive, durables made with an older ack wait
are changed in place, and each durable's lag is a metric (`shared.bus.consuming`)."""

from __future__ import annotations

import asyncio

from integration.bus_harness import Recorder, all_events_consumer, consumer_info, running
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from shared.bus import Bus, NatsSettings
from shared.bus.durables import durable_config
from shared.bus.fleet import FleetConsumers, agent_consumer
from shared.events import Event
from shared.runtime.metrics import render
from support.events import sample_events
from support.waiting import eventually

PENDING = "meshtrust_bus_consumer_pending_messages"


def pending(registry: CollectorRegistry, durable: str) -> float | None:
    """The lag metric of `durable`, as a scrape parses it."""
    for family in text_string_to_metric_families(render(registry).decode()):
        for sample in family.samples:
            if sample.name == PENDING and sample.labels.get("durable") == durable:
                return sample.value
    return None


def distinct_events(count: int) -> list[Event]:
    return [sample_events("east")[0] for _ in range(count)]


async def test_a_handler_running_three_ack_waits_is_delivered_once(bus: Bus) -> None:
    ack_wait = 1.0

    async def slow(event: object, delivery: object) -> None:
        await asyncio.sleep(3 * ack_wait)  # the work itself, not a synchronisation

    recorder = Recorder(behaviour=slow)  # type: ignore[arg-type]
    event = sample_events("east")[0]
    async with running(bus.consumer(all_events_consumer(ack_wait=ack_wait), recorder)):
        await bus.publish(event)
        await eventually(lambda: recorder.by_issuance[event.issuance] == 1, within=15)
        info = await consumer_info(bus, "test")
    assert [d.num_delivered for d in recorder.deliveries] == [1]
    assert info.num_redelivered == 0  # type: ignore[attr-defined]


async def test_a_durable_made_with_a_longer_ack_wait_is_updated_in_place(bus: Bus) -> None:
    js, stream = bus.connection.js, bus.settings.stream
    old = all_events_consumer(ack_wait=30.0)
    # Made as a durable re-created from a start sequence is: a deliver policy that the
    # service's own configuration (deliver all) cannot change.
    await js.add_consumer(stream, config=durable_config(old, start_sequence=1))
    async with running(bus.consumer(all_events_consumer(ack_wait=2.0), Recorder())):
        info = await eventually(lambda: _ack_wait_is(bus, "test", 2.0), message="ack wait updated")
    assert info.config.deliver_policy == "by_start_sequence"  # type: ignore[attr-defined]


async def _ack_wait_is(bus: Bus, durable: str, seconds: float) -> object | None:
    info = await consumer_info(bus, durable)
    return info if info.config.ack_wait == seconds else None  # type: ignore[attr-defined]


async def test_the_hub_updates_a_clusters_durable_made_with_an_older_ack_wait(bus: Bus) -> None:
    js, stream = bus.connection.js, bus.settings.stream
    await js.add_consumer(stream, config=agent_consumer("east", ack_wait=30.0).config())
    await FleetConsumers(bus.connection, ack_wait=5.0).check("east")
    info = await consumer_info(bus, "agent-east")
    assert info.config.ack_wait == 5.0  # type: ignore[attr-defined]
    assert info.config.max_ack_pending == 64  # type: ignore[attr-defined]


async def _lag_of_a_blocked_consumer(nats_settings: NatsSettings, *, provision: bool) -> None:
    """Five published, one being handled (the only slot): four not delivered, the lag."""
    registry = CollectorRegistry()
    release = asyncio.Event()

    async def hold(event: object, delivery: object) -> None:
        await release.wait()

    recorder = Recorder(behaviour=hold)  # type: ignore[arg-type]
    settings = all_events_consumer(
        max_in_flight=1, batch=1, provision=provision, record_completed=provision, info_refresh=0.2
    )
    async with Bus.connect(nats_settings, registry=registry) as bus:
        await bus.provision()
        if not provision:
            await bus.connection.js.add_consumer(
                bus.settings.stream, config=durable_config(settings)
            )
        for event in distinct_events(5):
            await bus.publish(event)
        async with running(bus.consumer(settings, recorder)):
            await eventually(lambda: len(recorder.events) == 1, message="one being handled")
            await eventually(lambda: pending(registry, "test") == 4, message="lag of four")
            if provision:
                # Published while nothing is fetched: only the consumer's info can tell.
                for event in distinct_events(2):
                    await bus.publish(event)
                await eventually(lambda: pending(registry, "test") == 6, message="lag of six")
            release.set()
            await eventually(lambda: pending(registry, "test") == 0, message="caught up")


async def test_the_lag_metric_counts_what_was_published_and_not_consumed(
    nats_settings: NatsSettings,
) -> None:
    await _lag_of_a_blocked_consumer(nats_settings, provision=True)


async def test_the_lag_metric_needs_no_consumer_info_where_the_identity_may_not_ask(
    nats_settings: NatsSettings,
) -> None:
    await _lag_of_a_blocked_consumer(nats_settings, provision=False)
