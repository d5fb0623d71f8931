"""The attacks of issue 15, against the whole running stack, from each identity's credentials.

One devstack for the module (nats-server with the shipped accounts and nkeys, the emulated
clusters, the issuer, agents and bouncers as separate processes). It is brought to FINISHED,
then attacked the way it was observed to break, with raw nats-py as an attacker would; then
each test asserts that nothing was stored or deleted, no service died, and a fresh issuance
(every declaration changed) still reaches FINISHED in both clusters with one signature each.
tests/security/test_bus_boundaries.py covers the same boundaries exhaustively at the NATS level;
this module shows the services behind them stand.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import nats
import nats.errors
import pytest
from e2e.e2e_audit import issuer_bus, ledger
from e2e.e2e_testing import World, declarations, ensure_running, running_stack
from nats.aio.client import Client

from devstack.stack import MGMT, Stack
from devstack.stack import status as processes_alive
from shared.bus.publishing import MSG_ID
from shared.bus.reading import read_stream
from shared.events import encode
from support.events import sample_events
from support.secured_nats import raw_connection

REMOTES = ["east", "west"]
TARGETS = (
    "meshtrust.ledger.east",
    "meshtrust.consumed.agent-east",
    "$KV.meshtrust-desired.east.issuedcertificates.istio-ca",
    "$KV.meshtrust-issued.east.0123456789abcdef0123456789abcdef",
)
TTL_DAYS = itertools.count(200)
"""A new lifetime for every re-declaration: each is a new generation, so a new issuance."""
STREAMS = ("MESHTRUST_LEDGER", "KV_meshtrust-desired", "KV_meshtrust-issued")
"""Streams no legitimate step of these tests writes to (completion records are checked by
content: the services record what they handle meanwhile)."""


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("security")
    with running_stack(root, remotes=REMOTES, pod_ready_delay=0.1) as running:
        yield running


async def finished(world: World) -> dict[str, str]:
    """Declare (idempotent) and wait for FINISHED everywhere: cluster -> issuance."""
    for cluster in REMOTES:
        text = declarations(cluster)
        await asyncio.to_thread(world.stack.kubectl, MGMT, "apply", "-f", "-", stdin=text)
    done = await world.wait_finished(dict.fromkeys(REMOTES), within=90)
    return {cluster: f.issuance for cluster, f in done.items()}


@pytest.fixture
async def world(stack: Stack) -> AsyncIterator[World]:
    ensure_running(stack)
    async with World(stack) as world:
        await finished(world)
        yield world


async def connect(stack: Stack, user: str) -> Client:
    """A raw connection as `user`, as an attacker would make it."""
    return await raw_connection(stack.nats_settings(user))


async def hub_state(stack: Stack) -> dict[str, object]:
    async with issuer_bus(stack) as bus:
        js = bus.connection.js
        counts = {s: (await js.stream_info(s)).state.messages for s in STREAMS}
        consumers = {
            c.name
            for stream in ("MESHTRUST", "KV_meshtrust-desired")
            for c in await js.consumers_info(stream)
        }
        records = [
            m.data async for m in read_stream(bus.connection, "MESHTRUST_CONSUMED", subject=">")
        ]
    # A PubAck stored as a record would be {"stream":..,"seq":..}; records are lists.
    junk = [r for r in records if not isinstance(json.loads(r), list)]
    return {"counts": counts, "consumers": consumers, "junk records": junk}


@dataclass(frozen=True)
class Baseline:
    """What the stack had before an attack: each cluster's issuance, and the signatures."""

    issuances: dict[str, str | None]
    signatures: int


async def baseline(world: World) -> Baseline:
    return Baseline(await world.issuances(), len(await ledger(world.stack)))


async def still_issues(world: World, before: Baseline) -> None:
    """No process died, the attack signed nothing, and every cluster gets a fresh
    certificate, signed once each."""
    dead = [name for name, alive in processes_alive(world.stack.root).items() if not alive]
    assert dead == [], f"the attack killed {dead}"
    assert len(await ledger(world.stack)) == before.signatures, "the attack got a signature"
    await world.redeclare(ttl_days=next(TTL_DAYS), key_algorithm="ECDSA", key_size=256)
    done = await world.wait_finished(before.issuances, within=90)
    assert set(done) == set(REMOTES)
    entries = await ledger(world.stack)
    assert len(entries) == before.signatures + len(REMOTES), "one signature per fresh issuance"


async def test_reply_subjects_aimed_at_the_hub_store_nothing_and_the_stack_issues(
    world: World,
) -> None:
    stack = world.stack
    before_all = await baseline(world)
    before = await hub_state(stack)
    legit = {
        "agent-west": ("meshtrust.v1.west.status.changed", sample_events("west")[5]),
        "bouncer-east": ("meshtrust.v1.east.bounce.completed", sample_events("east")[4]),
    }
    for user, (subject, event) in legit.items():
        client = await connect(stack, user)
        try:
            for target in TARGETS:
                await client.publish(subject, encode(event), reply=target)
            await client.flush(timeout=2)
        finally:
            await client.close()
    assert await hub_state(stack) == before
    await still_issues(world, before_all)


async def test_a_forged_certificate_or_a_bouncers_csr_is_not_stored_and_the_stack_issues(
    world: World,
) -> None:
    stack = world.stack
    before_all = await baseline(world)
    async with issuer_bus(stack) as bus:
        last = (await bus.connection.js.stream_info("MESHTRUST")).state.last_seq
    csr, forged = sample_events("east")[:2]  # csr.requested, certificate.issued, for east
    attempts = [
        ("bouncer-east", "meshtrust.v1.east.certificate.issued", forged),
        ("agent-west", "meshtrust.v1.east.certificate.issued", forged),
        ("agent-east", "meshtrust.v1.east.certificate.issued", forged),
        ("bouncer-east", "meshtrust.v1.east.csr.requested", csr),
    ]
    for user, subject, event in attempts:
        client = await connect(stack, user)
        try:
            await client.publish(subject, encode(event), headers={MSG_ID: event.dedupe_key()})
            await client.flush(timeout=2)
        finally:
            await client.close()
    async with issuer_bus(stack) as bus:
        assert (await bus.connection.js.stream_info("MESHTRUST")).state.last_seq == last
    await still_issues(world, before_all)


async def test_no_identity_but_the_hubs_can_delete_a_consumer_and_issuance_goes_on(
    world: World,
) -> None:
    stack = world.stack
    before_all = await baseline(world)
    before = await hub_state(stack)
    for user in ("auditor", "agent-east", "agent-west", "bouncer-east"):
        client = await connect(stack, user)
        try:
            for durable in ("csr-east", "agent-east", "issuer-status", "bouncer-east"):
                with pytest.raises((nats.errors.NoRespondersError, nats.errors.TimeoutError)):
                    await client.request(
                        f"$JS.API.CONSUMER.DELETE.MESHTRUST.{durable}", b"", timeout=0.5
                    )
        finally:
            await client.close()
    assert (await hub_state(stack))["consumers"] == before["consumers"]
    await still_issues(world, before_all)


async def test_a_cluster_consumer_deleted_by_the_hub_is_made_again_and_issuance_goes_on(
    world: World,
) -> None:
    stack = world.stack
    before_all = await baseline(world)
    async with issuer_bus(stack) as bus:
        await bus.connection.js.delete_consumer("MESHTRUST", "agent-east")
        await bus.connection.js.delete_consumer("KV_meshtrust-desired", "desired-west")
    await still_issues(world, before_all)


@pytest.mark.parametrize("subject", ["csr.requested", "status.changed"])
async def test_deeply_nested_json_from_an_agent_stops_no_signing(
    world: World, subject: str
) -> None:
    stack = world.stack
    before_all = await baseline(world)
    poison = b'{"a":' * 40_000 + b"1" + b"}" * 40_000  # ~200 KB, nested 40,000 deep
    client = await connect(stack, "agent-east")
    try:
        answer = await client.request(f"meshtrust.v1.east.{subject}", poison, timeout=5)
        assert json.loads(answer.data)["stream"] == "MESHTRUST"  # stored: the issuer sees it
    finally:
        await client.close()
    await still_issues(world, before_all)
