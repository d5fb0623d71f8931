"""Each identity can do its own work through shared.bus under the shipped account model.

A real nats-server with `devstack.natsconfig`'s accounts, nkeys and the hub's provisioning. What
each identity may *not* do is tests/security/test_bus_boundaries.py; here, that the boundaries
leave every service able to work: publish its own events, consume through the durable the hub
made for it (with completion records), watch its cluster's desired state, read the audit trail.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from integration.bus_harness import Recorder, running

from shared.bus import Bus, ConsumerSettings, KvUpdate, Put, Snapshot
from shared.bus.fleet import agent_consumer, bouncer_consumer, desired_consumer_config
from shared.bus.reading import read_stream
from shared.events import EventType
from support.events import sample_events
from support.secured_nats import SecuredNats, ledger, secured_nats
from support.waiting import eventually

CLUSTERS = ("east", "west")


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[SecuredNats]:
    with secured_nats(tmp_path, CLUSTERS) as nats:
        yield nats


@pytest.fixture
async def issuer(hub: SecuredNats) -> AsyncIterator[Bus]:
    await hub.provision(CLUSTERS)
    async with Bus.connect(hub.settings("issuer")) as bus:
        yield bus


def by_type(cluster: str) -> dict[EventType, object]:
    return {event.type: event for event in sample_events(cluster)}


async def test_an_agent_publishes_its_clusters_requests_and_statuses(
    issuer: Bus, hub: SecuredNats
) -> None:
    events = by_type("east")
    async with Bus.connect(hub.settings("agent-east")) as bus:
        for kind in (EventType.CSR_REQUESTED, EventType.STATUS_CHANGED, EventType.BOUNCE_REQUESTED):
            published = await bus.publish(events[kind])  # type: ignore[arg-type]
            assert published.stream == "MESHTRUST"
    info = await issuer.connection.js.stream_info("MESHTRUST")
    assert info.state.messages == 3


async def test_a_bouncer_publishes_its_clusters_bounce_answers(
    issuer: Bus, hub: SecuredNats
) -> None:
    async with Bus.connect(hub.settings("bouncer-east")) as bus:
        await bus.publish(by_type("east")[EventType.BOUNCE_COMPLETED])  # type: ignore[arg-type]
    assert (await issuer.connection.js.stream_info("MESHTRUST")).state.messages == 1


async def test_an_agent_consumes_through_the_durable_the_hub_made_with_records(
    issuer: Bus, hub: SecuredNats
) -> None:
    issued = by_type("east")[EventType.CERTIFICATE_ISSUED]
    async with Bus.connect(hub.settings("agent-east")) as bus:
        recorder = Recorder()
        settings = agent_consumer("east").consumer_settings(provision=False, fetch_timeout=0.2)
        async with running(bus.consumer(settings, recorder)):
            await issuer.publish(issued)  # type: ignore[arg-type]
            await eventually(lambda: issued in recorder.events)

        # Acknowledged after its completion record: nothing is pending on the durable.
        async def acked() -> bool:
            info = await issuer.connection.js.consumer_info("MESHTRUST", "agent-east")
            return info.num_ack_pending == 0 and info.num_pending == 0

        await eventually(acked)
    records = [m async for m in read_stream(issuer.connection, "MESHTRUST_CONSUMED", subject=">")]
    assert [m.subject for m in records] == ["meshtrust.consumed.agent-east"]


async def test_a_bouncer_consumes_its_clusters_bounce_requests(
    issuer: Bus, hub: SecuredNats
) -> None:
    request = by_type("east")[EventType.BOUNCE_REQUESTED]
    async with Bus.connect(hub.settings("bouncer-east")) as bus:
        recorder = Recorder()
        settings = bouncer_consumer("east").consumer_settings(provision=False, fetch_timeout=0.2)
        async with running(bus.consumer(settings, recorder)):
            await issuer.publish(request)  # type: ignore[arg-type]
            await eventually(lambda: request in recorder.events)


async def first_updates(bucket_watch: AsyncIterator[KvUpdate], count: int) -> list[KvUpdate]:
    return [await asyncio.wait_for(anext(bucket_watch), 10) for _ in range(count)]


async def test_an_agent_watches_its_clusters_desired_state_through_its_feed(
    issuer: Bus, hub: SecuredNats
) -> None:
    desired = await issuer.bucket("meshtrust-desired")
    await desired.put("east.issuedcertificates.ca", b"for east")
    await desired.put("west.issuedcertificates.ca", b"for west")
    async with Bus.connect(hub.settings("agent-east")) as bus:
        bucket = await bus.bucket("meshtrust-desired", feed=desired_consumer_config("east"))
        updates = bucket.watch("east.>", poll=0.2)
        try:
            (first,) = await first_updates(updates, 1)
            assert isinstance(first, Snapshot)
            assert {k: e.value for k, e in first.entries.items()} == {
                "east.issuedcertificates.ca": b"for east"
            }
            await desired.put("west.issuedcertificates.ca", b"west again")
            await desired.put("east.issuedcertificates.ca", b"east again")
            (change,) = await first_updates(updates, 1)
            assert isinstance(change, Put)
            assert (change.entry.key, change.entry.value) == (
                "east.issuedcertificates.ca",
                b"east again",
            )
        finally:
            await updates.aclose()


async def test_the_auditor_reads_the_event_stream_and_the_ledger(
    issuer: Bus, hub: SecuredNats
) -> None:
    for event in sample_events("east"):
        await issuer.publish(event)
    await ledger(issuer).append("meshtrust.ledger.east", b'{"serial":"1"}', msg_id="one")
    async with Bus.connect(hub.settings("auditor")) as bus:
        events = [m async for m in read_stream(bus.connection, "MESHTRUST", subject=">")]
        rows = [entry async for entry in ledger(bus).read()]
    assert len(events) == len(sample_events("east"))
    assert [row.data for row in rows] == [b'{"serial":"1"}']


async def test_the_issuer_makes_its_own_durables_and_appends_to_the_ledger(
    issuer: Bus,
) -> None:
    recorder = Recorder()
    settings = ConsumerSettings(
        durable="issuer", filter_subjects=("meshtrust.v1.*.csr.requested",), fetch_timeout=0.2
    )
    csr = by_type("west")[EventType.CSR_REQUESTED]
    async with running(issuer.consumer(settings, recorder)):
        await issuer.publish(csr)  # type: ignore[arg-type]
        await eventually(lambda: csr in recorder.events)
    assert await ledger(issuer).append("meshtrust.ledger.west", b"{}", msg_id="x") == 1
