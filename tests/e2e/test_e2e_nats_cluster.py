"""The whole stack on a three-node NATS cluster (`Stack(nats_nodes=3)`, every stream and bucket
with three replicas): one node killed with SIGKILL mid-flow, the MESHTRUST stream's leader in
one test and one of its followers in the other. Every cluster still reaches FINISHED, each
issuance signed once (one ledger entry), its pods bounced once, and the audit stream holds the
whole flow of every issuance with no gap.

One stack for the module (mgmt + east + west). Each test is one round: both declarations change
in mgmt (a new `ttlDays`: a new issuance everywhere), and the node dies once east's CSR is in
the stream, with the issuer, the agents and the bouncers mid-flow. The killed node is started
again after the round, so that the next test has three. The leader test prints how long the
stream was without a leader and how long until every cluster was FINISHED (visible with `-s`;
docs/bus.md, "A three-node NATS cluster").
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable, Iterator
from typing import Any

import nats.errors
import nats.js.errors
import pytest
from e2e.e2e_audit import (
    check_one_key_and_one_signature,
    events,
    issuer_bus,
    known_issuances,
    wait_csr_stored,
)
from e2e.e2e_testing import (
    Finished,
    PodLog,
    World,
    declarations,
    ensure_running,
    recorded_bounces,
    running_stack,
    status_of,
)

from devstack.natscluster import NatsNodes
from devstack.stack import MGMT, Stack
from support.waiting import eventually

REMOTES = ["east", "west"]
STREAM = "MESHTRUST"
TTL_DAYS = itertools.count(200)
FLOW = {"csr.requested", "certificate.issued", "bounce.requested", "bounce.completed"}
STATES = {"REQUESTED", "ISSUED", "FINISHED"}
ENV = {"agent": {"MESHTRUST_AGENT_RESEND_AFTER": "5"}}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("e2e-nats-cluster")
    with running_stack(root, remotes=REMOTES, pod_ready_delay=0.5, env=ENV, nats_nodes=3) as up:
        for cluster in REMOTES:
            up.kubectl(MGMT, "apply", "-f", "-", stdin=declarations(cluster))
        yield up


@pytest.fixture
async def world(stack: Stack) -> Any:
    """Every process (every NATS node among them) running, every cluster FINISHED."""
    ensure_running(stack)
    await asyncio.to_thread(nodes(stack).wait_formed)
    async with World(stack) as w:
        await w.wait_finished({}, within=90)
        yield w


def nodes(stack: Stack) -> NatsNodes:
    assert stack.nats is not None
    return stack.nats


async def stream_leader(stack: Stack) -> str | None:
    """The server leading the MESHTRUST stream now, as JetStream reports it (None: none)."""
    try:
        async with issuer_bus(stack) as bus:
            cluster = (await bus.connection.js.stream_info(STREAM)).cluster
    except (nats.errors.Error, nats.js.errors.Error, OSError):
        return None  # no leader to answer, or the node we reached is going
    return cluster.leader if cluster is not None else None


async def test_the_stack_runs_on_three_replicated_nodes(world: World) -> None:
    stack = world.stack
    assert stack.info is not None
    assert len(stack.info.nats_url.split(",")) == 3
    async with issuer_bus(stack) as bus:
        for name in (STREAM, "MESHTRUST_LEDGER", "MESHTRUST_CONSUMED", "KV_meshtrust-desired"):
            info = await bus.connection.js.stream_info(name)
            assert info.config.num_replicas == 3, name
            assert info.cluster is not None
            assert len(info.cluster.replicas or []) == 2, name


async def kill_mid_flow(world: World, choose: Callable[[str], str]) -> tuple[str, float]:
    """One round; `choose(stream leader's node)` names the node killed once east's CSR is
    stored. Returns that node and the seconds from the kill to every cluster FINISHED."""
    stack = world.stack
    previous = await world.issuances()
    known = await known_issuances(stack)
    rv = await world.ic_resource_version("east")
    async with PodLog(world) as pods:
        await world.redeclare(ttl_days=next(TTL_DAYS), key_algorithm="ECDSA", key_size=256)
        east = await world.first_seen(
            "east",
            lambda obj: (
                status_of(obj).get("state") == "REQUESTED"
                and status_of(obj).get("issuanceId") not in (None, previous["east"])
            ),
            after=rv,
            within=60,
            what="a new issuance REQUESTED",
        )
        issuance = str(status_of(east)["issuanceId"])
        await wait_csr_stored(stack, "east", issuance, within=20)
        leader = await eventually(lambda: stream_leader(stack), within=20, message="a leader")
        victim = choose(nodes(stack).node_of(leader))
        killed = time.monotonic()
        stack.kill(victim)
        try:
            if victim == nodes(stack).node_of(leader):
                elected = await eventually(
                    lambda: _new_leader(stack, leader), within=30, interval=0.1
                )
                print(
                    f"stream leader {victim} killed: {elected} elected after "
                    f"{time.monotonic() - killed:.1f}s"
                )
            finished = await world.wait_finished(previous, within=90)
            took = time.monotonic() - killed
            await check_round(world, pods, finished, known=known)
        finally:
            await asyncio.to_thread(stack.start, victim)
    assert finished["east"].issuance == issuance, "east's issuance was started again"
    return victim, took


async def _new_leader(stack: Stack, old: str) -> str | None:
    leader = await stream_leader(stack)
    return leader if leader not in (None, old) else None


async def check_round(
    world: World, pods: PodLog, finished: dict[str, Finished], *, known: set[str]
) -> None:
    """One signature and one key per issuance, the pods bounced once, the audit complete."""
    await check_one_key_and_one_signature(world, finished, known=known)
    for cluster, done in finished.items():
        await pods.replaced_once(cluster)
        issuance, bounced = recorded_bounces(await world.pbd(cluster))
        assert issuance == done.issuance
        assert bounced == pods.bounced_names(cluster)
    await eventually(
        lambda: audit_gaps(world.stack, finished),
        within=30,
        interval=0.2,
        message="the audit stream holds every step",
    )


async def audit_gaps(stack: Stack, finished: dict[str, Finished]) -> bool:
    """True once the MESHTRUST stream holds, for every cluster's issuance, every step of the
    flow and every state it went through, in an unbroken run of sequences."""
    stored = await events(stack)
    sequences = [e["_seq"] for e in stored]
    assert sequences == list(range(sequences[0], sequences[0] + len(sequences))), "a gap"
    for cluster, done in finished.items():
        mine = [e for e in stored if e["cluster"] == cluster and e["issuance"] == done.issuance]
        kinds = {e["type"] for e in mine}
        states = {e["data"]["state"] for e in mine if e["type"] == "status.changed"}
        if not (kinds >= FLOW and states >= STATES):
            return False
    return True


@pytest.mark.timeout(180)
async def test_the_stream_leader_killed_mid_flow_every_cluster_finishes_once(
    world: World,
) -> None:
    victim, took = await kill_mid_flow(world, lambda leader: leader)
    print(f"stream leader {victim} killed mid-flow: every cluster FINISHED {took:.1f}s later")


@pytest.mark.timeout(180)
async def test_a_stream_follower_killed_mid_flow_every_cluster_finishes_once(
    world: World,
) -> None:
    def follower(leader: str) -> str:
        return next(name for name in nodes(world.stack).names if name != leader)

    victim, took = await kill_mid_flow(world, follower)
    print(f"stream follower {victim} killed mid-flow: every cluster FINISHED {took:.1f}s later")
