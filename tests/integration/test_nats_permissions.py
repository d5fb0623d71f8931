"""Per-cluster NATS users (devstack/natsconfig.py) against a real nats-server.

What the services rely on: the agent of `west` cannot publish on `east`'s subjects, cannot read
`east`'s consumer or desired state, and can do everything its own work needs through shared.bus
(publish, its durable consumer with completion records, its desired-state watch).
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from integration.bus_harness import Recorder, running

from devstack.natsconfig import ClusterUser, render, user_names
from devstack.natsserver import NatsServer
from shared.bus import (
    Bucket,
    Bus,
    BusError,
    ConsumerSettings,
    KvUpdate,
    NatsSettings,
    PublishError,
    Snapshot,
)
from support.events import sample_events
from support.waiting import eventually

CLUSTERS = ("east", "west")


@pytest.fixture
def passwords() -> dict[str, str]:
    return {name: secrets.token_urlsafe(16) for name in user_names(CLUSTERS)}


@pytest.fixture
def secured_server(tmp_path: Path, passwords: dict[str, str]) -> Iterator[NatsServer]:
    config = tmp_path / "nats.conf"
    server = NatsServer(store_dir=tmp_path / "js", config_file=config, log_file=tmp_path / "n.log")
    config.write_text(render(clusters=CLUSTERS, passwords=passwords, port=server.port))
    server.start()
    try:
        yield server
    finally:
        server.stop()


def settings_for(server: NatsServer, user: str, password: str, inbox: str) -> NatsSettings:
    return NatsSettings(
        urls=(server.url,),
        user=user,
        password=password,  # type: ignore[arg-type]
        inbox_prefix=inbox,
        request_timeout=1.0,
        publish_deadline=2.0,
        provision=False,
    )


@pytest.fixture
async def issuer(secured_server: NatsServer, passwords: dict[str, str]) -> AsyncIterator[Bus]:
    settings = settings_for(secured_server, "issuer", passwords["issuer"], "_INBOX")
    async with Bus.connect(settings) as bus:
        await bus.provision()
        yield bus


def cluster_settings(
    server: NatsServer, passwords: dict[str, str], user: ClusterUser
) -> NatsSettings:
    return settings_for(server, user.name, passwords[user.name], user.inbox_prefix)


async def test_an_agent_publishes_its_own_clusters_events_only(
    issuer: Bus, secured_server: NatsServer, passwords: dict[str, str]
) -> None:
    west = ClusterUser("agent", "west")
    async with Bus.connect(cluster_settings(secured_server, passwords, west)) as bus:
        await bus.publish(sample_events("west")[0])
        with pytest.raises(PublishError, match="may this user publish"):
            await bus.publish(sample_events("east")[0])
    info = await issuer.connection.js.stream_info("MESHTRUST")
    assert info.state.messages == 1


async def test_an_agent_consumes_through_its_own_durable_with_completion_records(
    issuer: Bus, secured_server: NatsServer, passwords: dict[str, str]
) -> None:
    east = ClusterUser("agent", "east")
    issued = sample_events("east")[1]
    async with Bus.connect(cluster_settings(secured_server, passwords, east)) as bus:
        recorder = Recorder()
        settings = ConsumerSettings(
            durable="agent-east",
            filter_subjects=("meshtrust.v1.east.certificate.issued",),
            fetch_timeout=0.2,
        )
        async with running(bus.consumer(settings, recorder)):
            await issuer.publish(issued)
            await eventually(lambda: issued in recorder.events)


async def test_an_agent_cannot_use_another_clusters_consumer(
    issuer: Bus, secured_server: NatsServer, passwords: dict[str, str]
) -> None:
    west = ClusterUser("agent", "west")
    async with Bus.connect(cluster_settings(secured_server, passwords, west)) as bus:
        consumer = bus.consumer(
            ConsumerSettings(durable="agent-east", filter_subjects=("meshtrust.v1.east.>",)),
            Recorder(),
        )
        with pytest.raises(BusError, match="cannot open consumer agent-east"):
            await consumer.run(asyncio.Event())


async def first_update(bucket: Bucket, pattern: str, *, within: float) -> KvUpdate:
    updates = bucket.watch(pattern, poll=0.2)
    try:
        return await asyncio.wait_for(anext(updates), within)
    finally:
        await updates.aclose()


async def test_an_agent_watches_only_its_own_desired_state(
    issuer: Bus, secured_server: NatsServer, passwords: dict[str, str]
) -> None:
    desired = await issuer.bucket("meshtrust-desired")
    await desired.put("east.issuedcertificates.ca", b"for east")
    await desired.put("west.issuedcertificates.ca", b"for west")
    east = ClusterUser("agent", "east")
    async with Bus.connect(cluster_settings(secured_server, passwords, east)) as bus:
        bucket = await bus.bucket("meshtrust-desired")
        first = await first_update(bucket, "east.>", within=10)
        assert isinstance(first, Snapshot)
        assert {k: e.value for k, e in first.entries.items()} == {
            "east.issuedcertificates.ca": b"for east"
        }
        # West's keys: the server refuses the watch, which keeps retrying and yields nothing.
        with pytest.raises(TimeoutError):
            await first_update(bucket, "west.>", within=3)
