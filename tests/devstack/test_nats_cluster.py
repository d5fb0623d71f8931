"""Three nats-server nodes in one JetStream cluster (`devstack.natscluster`), with the shipped
account model: they form, raise a stream's replicas in place, and outlive their stream leader."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import nats
import pytest
from nats.js import JetStreamContext

from devstack.natscluster import NatsNodes, kept_nodes
from devstack.natsconfig import PROVISIONER_USER, nkeys_for, render, user_names
from devstack.stack import Stack, StackError
from shared.bus import Bus, NatsSettings
from shared.bus.completions import RECORD_STREAM
from shared.bus.ledger import Ledger
from support.waiting import eventually

STREAM = "MESHTRUST"
LEDGER = "MESHTRUST_LEDGER"
BUCKET_STREAM = "KV_meshtrust-issued"
CLUSTERS = ("east",)


@pytest.fixture
def nodes(tmp_path: Path) -> Iterator[NatsNodes]:
    public = nkeys_for(tmp_path / "credentials", user_names(CLUSTERS))
    cluster = NatsNodes(tmp_path / "nats", tmp_path / "logs", 3)
    try:
        cluster.start(lambda block: render(clusters=CLUSTERS, nkeys=public, port=0, cluster=block))
        yield cluster
    finally:
        cluster.stop()


def settings(nodes: NatsNodes, replicas: int) -> NatsSettings:
    return NatsSettings(
        urls=(nodes.urls,),  # comma-separated within one item, as a stack records it
        nkeys_seed_file=nodes.directory.parent / "credentials" / f"{PROVISIONER_USER}.nk",
        stream_replicas=replicas,
        kv_replicas=replicas,
        request_timeout=2.0,
        publish_deadline=20.0,
    )


async def provision(nodes: NatsNodes, replicas: int) -> None:
    """What `meshtrust-issuer provision` does to the stream, the records, a bucket, the ledger."""
    async with Bus.connect(settings(nodes, replicas)) as bus:
        await bus.provision()
        await bus.bucket("meshtrust-issued", history=1)
        await Ledger(bus.connection, stream=LEDGER, subjects=("meshtrust.ledger.>",)).ensure()


@pytest.fixture
async def js(nodes: NatsNodes) -> AsyncIterator[JetStreamContext]:
    seed = settings(nodes, 1).nkeys_seed_file
    client = await nats.connect(
        servers=nodes.urls.split(","), nkeys_seed=str(seed), max_reconnect_attempts=-1
    )
    try:
        yield client.jetstream(timeout=2.0)
    finally:
        await client.close()


def test_the_nodes_route_to_each_other_and_name_distinct_servers(nodes: NatsNodes) -> None:
    assert nodes.names == ["nats-server-0", "nats-server-1", "nats-server-2"]
    assert len(nodes.urls.split(",")) == 3
    assert settings(nodes, 3).urls == tuple(nodes.urls.split(","))
    assert nodes.env() == {
        "MESHTRUST_NATS_STREAM_REPLICAS": "3",
        "MESHTRUST_NATS_KV_REPLICAS": "3",
    }
    ports = {server.cluster_port for server in nodes.servers.values()}
    assert None not in ports
    assert len(ports) == 3
    for server in nodes.servers.values():
        assert server.config_file is not None
        text = server.config_file.read_text()
        peers = [p for p in ports if p != server.cluster_port]
        assert all(f"127.0.0.1:{p}" in text for p in peers), "routes to every peer, kept"
        assert f'"port": {server.cluster_port}' in text, "its own route port, kept for a restart"


async def test_provisioning_raises_one_replica_to_three_in_place(
    nodes: NatsNodes, js: JetStreamContext
) -> None:
    await provision(nodes, 1)
    for n in range(5):
        await js.publish("meshtrust.v1.east.csr.requested", f"{n}".encode(), stream=STREAM)
    await js.publish("meshtrust.ledger.east", b"entry", stream=LEDGER)
    streams = (STREAM, RECORD_STREAM, BUCKET_STREAM, LEDGER)
    assert [(await js.stream_info(s)).config.num_replicas for s in streams] == [1, 1, 1, 1]

    await provision(nodes, 3)

    async def replicated() -> bool:
        for name in streams:
            info = await js.stream_info(name)
            peers = info.cluster.replicas if info.cluster else None
            if info.config.num_replicas != 3 or not peers or len(peers) != 2:
                return False
            if not all(peer.current for peer in peers):
                return False
        return True

    await eventually(replicated, within=20, message="every stream replicated three times")
    assert (await js.stream_info(STREAM)).state.messages == 5, "nothing lost by the change"
    assert (await js.stream_info(LEDGER)).state.messages == 1
    ledger = await js.stream_info(LEDGER)
    assert ledger.config.deny_delete, "still append-only"
    assert ledger.config.deny_purge


async def test_a_killed_stream_leader_is_replaced_and_rejoins(
    nodes: NatsNodes, js: JetStreamContext
) -> None:
    await provision(nodes, 3)
    for n in range(3):
        await js.publish("meshtrust.v1.east.csr.requested", f"{n}".encode(), stream=STREAM)
    cluster = (await js.stream_info(STREAM)).cluster
    assert cluster is not None
    old = cluster.leader
    assert old is not None
    leader = nodes.node_of(old)

    killed = time.monotonic()
    nodes.kill(leader)

    async def new_leader() -> str | None:
        try:
            cluster = (await js.stream_info(STREAM)).cluster
        except (nats.errors.TimeoutError, nats.js.errors.APIError, nats.errors.NoRespondersError):
            return None
        if cluster is None or cluster.leader in (None, old):
            return None
        return cluster.leader

    elected = await eventually(new_leader, within=30, interval=0.1, message="a new leader")
    print(f"stream leader {leader} killed: {elected} leads after {time.monotonic() - killed:.1f}s")
    ack = await js.publish("meshtrust.v1.east.csr.requested", b"after", stream=STREAM)
    assert ack.seq == 4, "the stream went on from where it was"

    nodes.restart(leader)
    nodes.wait_formed()

    async def caught_up() -> bool:
        cluster = (await js.stream_info(STREAM)).cluster
        peers = cluster.replicas if cluster else None
        return bool(peers) and len(peers or []) == 2 and all(p.current for p in peers or [])

    await eventually(caught_up, within=30, interval=0.1, message="the old leader caught up")


def test_a_kept_stack_is_resumed_only_with_the_nodes_it_was_made_with(tmp_path: Path) -> None:
    # Its streams' replicas live in those nodes' stores: one node could not serve them.
    root = tmp_path / "devstack"
    (root / "nats").mkdir(parents=True)
    (root / "nats" / "nodes").write_text("3\n")
    assert kept_nodes(root / "nats") == 3
    with pytest.raises(StackError, match="keeps 3 NATS nodes, not 1"):
        Stack(root, remotes=["east"], nats_nodes=1).up()
    assert not (root / "nats" / "node-0").exists(), "nothing was started"
    with pytest.raises(StackError, match="at least 1"):
        NatsNodes(tmp_path / "none", tmp_path / "logs", 0)
