"""kill -9, once each, at each state of the flow: every IssuedCertificate still reaches FINISHED,
with one key and one signature per issuance, and the pods bounced once.

One stack (mgmt + east + west) for the module. Each test is one *round*: it changes both
declarations in mgmt (a new `ttlDays`, so a new generation and a new issuance in both clusters),
watches east's IssuedCertificate and SIGKILLs one process the moment the watch delivers the
state, restarts it (`Stack.start`), and waits for FINISHED in both clusters with a deadline.
How each state is made long enough to be hit is said per test (docs/e2e.md has the table).

The issuer's and the bouncer's crash tests print how long the work took to be done again after
the kill (visible with `-s`; docs/bus.md, "Ack wait and crash recovery"); only the behaviour is
asserted.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from e2e.e2e_audit import (
    check_one_key_and_one_signature,
    issuer_bus,
    key_fingerprint,
    known_issuances,
    ledger,
    read_stream,
    wait_csr_stored,
)
from e2e.e2e_testing import (
    KEY_SECRET,
    Finished,
    PodLog,
    World,
    declarations,
    ensure_running,
    recorded_bounces,
    running_stack,
    set_latency,
    status_of,
)

from devstack.stack import MGMT, Stack
from services.bouncer.settings import BouncerSettings
from services.issuer.settings import IssuerSettings

REMOTES = ["east", "west"]
POD_READY_DELAY = 1.5
"""Seconds before a new pod is Ready: the bouncer waits this long per selector, so ISSUED (the
bounce) lasts over 3 s, long enough to kill the bouncer or the agent in it."""

MGMT_LATENCY = 1.0
"""Seconds added to every mgmt API request while the issuer must be caught mid-CSR: its
handler reads the declaration and the signing Secret live, so it holds a CSR about 2 s."""

ISSUER_ACK_WAIT = IssuerSettings.model_fields["ack_wait"].default
CLUSTER_ACK_WAIT = IssuerSettings.model_fields["cluster_ack_wait"].default
BOUNCER_ACK_WAIT = BouncerSettings.model_fields["ack_wait"].default

ENV = {
    # A killed issuer or bouncer leaves its message unacknowledged: JetStream redelivers it to
    # the restarted process after ack_wait (the defaults, 5 s: the recovery measured is the
    # shipped one). The bouncer's and the agent's consumers are the hub's: the issuer's
    # cluster ack wait.
    # An agent killed while handling certificate.issued is answered again by its own re-send
    # (a new attempt) after this, or by the redelivery after the cluster ack wait.
    "agent": {"MESHTRUST_AGENT_RESEND_AFTER": "5"},
}
TTL_DAYS = itertools.count(300)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("e2e-crashes")
    with running_stack(root, remotes=REMOTES, pod_ready_delay=POD_READY_DELAY, env=ENV) as up:
        for cluster in REMOTES:
            up.kubectl(MGMT, "apply", "-f", "-", stdin=declarations(cluster))
        yield up


@pytest.fixture
async def world(stack: Stack) -> Any:
    """The stack with every process running, both clusters FINISHED (the round's start)."""
    set_latency(stack, MGMT, 0)
    ensure_running(stack)
    async with World(stack) as w:
        await w.wait_finished({}, within=90)
        yield w


class Round:
    """One new issuance in every cluster, and what was true before it."""

    def __init__(self, world: World, *, key_algorithm: str, key_size: int) -> None:
        self.world = world
        self.key_algorithm = key_algorithm
        self.key_size = key_size
        self.previous: dict[str, str | None] = {}
        self.known: set[str] = set()
        self.rv = ""

    async def begin(self) -> None:
        self.previous = await self.world.issuances()
        self.known = await known_issuances(self.world.stack)
        self.rv = await self.world.ic_resource_version("east")
        await self.world.redeclare(
            ttl_days=next(TTL_DAYS), key_algorithm=self.key_algorithm, key_size=self.key_size
        )

    async def seen(
        self, state: str, *, also: Callable[[dict[str, Any]], bool] | None = None
    ) -> str:
        """Wait (watch) until east's new issuance is in `state`; returns the issuance id."""

        def matches(obj: dict[str, Any]) -> bool:
            status = status_of(obj)
            return status.get("state") == state and status.get("issuanceId") not in (
                None,
                self.previous["east"],
            )

        obj = await self.world.first_seen(
            "east", matches, after=self.rv, within=60, what=f"a new issuance {state}"
        )
        return str(status_of(obj)["issuanceId"])

    async def finish(self, pods: PodLog) -> dict[str, Finished]:
        """Every cluster FINISHED for a new issuance, one key and one signature each, and its
        pods bounced exactly once."""
        finished = await self.world.wait_finished(self.previous, within=90)
        await check_one_key_and_one_signature(self.world, finished, known=self.known)
        for cluster, done in finished.items():
            await pods.replaced_once(cluster)
            issuance, bounced = recorded_bounces(await self.world.pbd(cluster))
            assert issuance == done.issuance
            assert bounced == pods.bounced_names(cluster)
        return finished


async def restart(stack: Stack, name: str) -> None:
    await asyncio.to_thread(stack.start, name)


async def agent_killed_in_requested(world: World, *, after_csr_stored: bool) -> None:
    # RSA-4096: the agent's checks of the issued certificate against its key keep east in
    # REQUESTED for ~0.7 s after the issuer answered (ECDSA: ~60 ms).
    stack = world.stack
    round_ = Round(world, key_algorithm="RSA", key_size=4096)
    async with PodLog(world) as pods:
        await round_.begin()
        issuance = await round_.seen("REQUESTED")
        if after_csr_stored:
            await wait_csr_stored(stack, "east", issuance, within=10)
        stack.kill("agent-east")
        # Only the agent writes the status: still REQUESTED means it died in REQUESTED.
        assert status_of(await world.ic("east"))["state"] == "REQUESTED", "killed too late"
        key_secret = await world.secret("east", KEY_SECRET)
        assert key_secret is not None, "REQUESTED without a key Secret"
        key_at_kill = key_fingerprint(key_secret["tls.key"])
        await restart(stack, "agent-east")
        finished = await round_.finish(pods)
    assert finished["east"].issuance == issuance, "a second issuance (a new key) was started"
    entry = {e["issuance"]: e for e in await ledger(stack)}[issuance]
    assert entry["csr_public_key_fingerprint"] == key_at_kill


@pytest.mark.timeout(180)
async def test_the_agent_killed_as_soon_as_requested_finishes_with_the_same_key(
    world: World,
) -> None:
    # Usually lands between the status write and the CSR's publish.
    await agent_killed_in_requested(world, after_csr_stored=False)


@pytest.mark.timeout(180)
async def test_the_agent_killed_in_requested_after_its_csr_was_sent_finishes_with_that_key(
    world: World,
) -> None:
    # The CSR is in the stream: the issuer has answered or is answering, the agent is waiting
    # for or checking the certificate.
    await agent_killed_in_requested(world, after_csr_stored=True)


@pytest.mark.timeout(180)
async def test_the_issuer_killed_holding_a_csr_signs_it_once_after_restart(world: World) -> None:
    # The CSR is in the issuer's hands (fetched, not acknowledged) while its live reads of the
    # declaration and the signing Secret are slowed by the mgmt latency: kill it there. The
    # management API server stays that slow while the issuer comes back: JetStream redelivers
    # the CSR (ack_wait) about when the agent re-sends it (resend_after), and both must come
    # to one signature.
    stack = world.stack
    round_ = Round(world, key_algorithm="ECDSA", key_size=256)
    async with PodLog(world) as pods:
        set_latency(stack, MGMT, MGMT_LATENCY)
        try:
            await round_.begin()
            issuance = await round_.seen("REQUESTED")
            await wait_csr_stored(stack, "east", issuance, within=10)
            stack.kill("issuer")
            killed = time.monotonic()
            assert issuance not in {e["issuance"] for e in await ledger(stack)}, "killed too late"
            await restart(stack, "issuer")
            await signed(stack, issuance, within=60)
            took = time.monotonic() - killed
            finished = await round_.finish(pods)
        finally:
            set_latency(stack, MGMT, 0)
    assert finished["east"].issuance == issuance
    print(
        f"recovery after issuer crash: {took:.1f}s from the kill to the CSR signed "
        f"(ack_wait {ISSUER_ACK_WAIT:g}s; restart included; mgmt reads slowed {MGMT_LATENCY:g}s)"
    )


async def signed(stack: Stack, issuance: str, *, within: float) -> None:
    """Poll the ledger until it has `issuance`'s signature."""
    deadline = time.monotonic() + within
    async with issuer_bus(stack) as bus:
        while True:
            rows = await read_stream(bus, "MESHTRUST_LEDGER", ("meshtrust.ledger.>",))
            if any(json.loads(row.data)["issuance"] == issuance for row in rows):
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"{issuance} not signed within {within}s")
            await asyncio.sleep(0.05)


@pytest.mark.timeout(180)
async def test_a_csr_re_sent_while_the_issuer_still_works_on_it_is_signed_once(
    world: World,
) -> None:
    # No kill: the same meeting of two copies of one CSR as above, made directly. Each mgmt
    # read takes 3 s, so the issuer needs ~6 s for a CSR, longer than the agent waits before
    # it re-sends (resend_after 5 s): attempt 2 arrives while attempt 1 is being handled.
    stack = world.stack
    round_ = Round(world, key_algorithm="ECDSA", key_size=256)
    async with PodLog(world) as pods:
        set_latency(stack, MGMT, 3.0)
        try:
            await round_.begin()
            await round_.finish(pods)
        finally:
            set_latency(stack, MGMT, 0)


async def bounce_started(world: World, issuance: str) -> None:
    """Wait until east's directive records selector 0 bounced for `issuance`: the bouncer now
    waits POD_READY_DELAY for the replacements."""

    async def started() -> bool:
        recorded, bounced = recorded_bounces(await world.pbd("east"))
        return recorded == issuance and len(bounced) >= 1

    await _poll(started, within=30, what="the bouncer to record selector 0")


@pytest.mark.timeout(180)
async def test_the_bouncer_killed_mid_bounce_bounces_each_pod_once(world: World) -> None:
    # ISSUED lasts the bounce (2 selectors x POD_READY_DELAY).
    stack = world.stack
    round_ = Round(world, key_algorithm="ECDSA", key_size=256)
    async with PodLog(world) as pods:
        await round_.begin()
        issuance = await round_.seen("ISSUED")
        await bounce_started(world, issuance)
        stack.kill("bouncer-east")
        killed = time.monotonic()
        assert status_of(await world.ic("east"))["state"] == "ISSUED", "killed too late"
        _, bounced = recorded_bounces(await world.pbd("east"))
        assert len(bounced) < 2, "killed after the bounce had finished"
        await restart(stack, "bouncer-east")
        await bounced_all(world, issuance)
        took = time.monotonic() - killed
        finished = await round_.finish(pods)
    assert finished["east"].issuance == issuance
    print(
        f"recovery after bouncer crash: {took:.1f}s from the kill to the restarted bouncer's "
        f"bounce of the second selector (ack_wait {CLUSTER_ACK_WAIT:g}s; restart included)"
    )


async def bounced_all(world: World, issuance: str) -> None:
    """Wait until east's directive records both selectors bounced for `issuance` (the second
    is recorded as its pods are deleted, before they are replaced)."""

    async def done() -> bool:
        recorded, bounced = recorded_bounces(await world.pbd("east"))
        return recorded == issuance and len(bounced) >= 2

    await _poll(done, within=60, what="the restarted bouncer to finish the bounce")


async def agent_killed_in_issued(world: World, *, mid_bounce: bool) -> None:
    stack = world.stack
    round_ = Round(world, key_algorithm="ECDSA", key_size=256)
    async with PodLog(world) as pods:
        await round_.begin()
        issuance = await round_.seen("ISSUED")
        if mid_bounce:
            await bounce_started(world, issuance)
        stack.kill("agent-east")
        assert status_of(await world.ic("east"))["state"] == "ISSUED", "killed too late"
        await restart(stack, "agent-east")
        finished = await round_.finish(pods)
    assert finished["east"].issuance == issuance


@pytest.mark.timeout(180)
async def test_the_agent_killed_as_soon_as_issued_finishes_and_the_pods_are_bounced_once(
    world: World,
) -> None:
    # Usually lands before bounce.requested was published: the restarted agent asks.
    await agent_killed_in_issued(world, mid_bounce=False)


@pytest.mark.timeout(180)
async def test_the_agent_killed_while_its_pods_are_bounced_gets_them_bounced_once(
    world: World,
) -> None:
    # The bounce runs: the restarted agent cannot know it asked, and asks again; the bouncer
    # must answer the second request from its record, not bounce again.
    await agent_killed_in_issued(world, mid_bounce=True)


@pytest.mark.timeout(180)
async def test_nats_server_killed_mid_flow_every_certificate_finishes(world: World) -> None:
    # East's CSR is stored and held by the issuer (mgmt latency); west's is on its way: the
    # server dies with deliveries unacknowledged and the agents and bouncers waiting, and is
    # restarted on the same store and port; everyone reconnects.
    stack = world.stack
    round_ = Round(world, key_algorithm="ECDSA", key_size=256)
    async with PodLog(world) as pods:
        set_latency(stack, MGMT, MGMT_LATENCY)
        await round_.begin()
        issuance = await round_.seen("REQUESTED")
        await wait_csr_stored(stack, "east", issuance, within=10)
        stack.kill("nats-server")
        await restart(stack, "nats-server")
        set_latency(stack, MGMT, 0)
        finished = await round_.finish(pods)
    assert finished["east"].issuance == issuance


async def _poll(check: Callable[[], Any], *, within: float, what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not await check():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {within} s waiting for {what}")
        await asyncio.sleep(0.02)


@pytest.mark.timeout(180)
async def test_nats_server_killed_while_the_pods_are_bounced_every_certificate_finishes(
    world: World,
) -> None:
    # The bouncer waits for replacements (POD_READY_DELAY), the agents for bounce.completed:
    # the server dies with both clusters' bounce requests delivered and unacknowledged.
    stack = world.stack
    round_ = Round(world, key_algorithm="ECDSA", key_size=256)
    async with PodLog(world) as pods:
        await round_.begin()
        issuance = await round_.seen("ISSUED")
        await bounce_started(world, issuance)
        stack.kill("nats-server")
        await restart(stack, "nats-server")
        finished = await round_.finish(pods)
    assert finished["east"].issuance == issuance
