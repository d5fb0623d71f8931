"""docker-compose.yml, run for real: what `make demo` checks, then state across down/up and a crash.

One stack for the module (`ComposeStack`: the user's file plus compose.host.yml, host
networking on loopback). The tests run in file order and each builds on the previous one's
state, as a user's session would: declare and reach FINISHED; `down` and `up` keeps everything
and issues nothing new; a killed service is restarted by its restart policy. Each also gets
the stack there itself if run alone (the declarations are idempotent).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import signal
from collections.abc import Iterator
from typing import Any

import pytest
from containers.containerkit import ComposeStack, docker, inspect, wait_for
from e2e.e2e_audit import (
    check_one_key_and_one_signature,
    events,
    issuer_bus,
    ledger,
    openssl_verify,
    private_key_forms,
    read_stream,
)
from e2e.e2e_testing import (
    HOSTS,
    ISSUED_SECRET,
    ORG,
    Finished,
    PodLog,
    World,
    recorded_bounces,
    status_of,
)

from devstack.stack import MGMT
from shared.pki import Bundle, check_bundle
from support.waiting import eventually

pytestmark = [pytest.mark.containers, pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ComposeStack]:
    running = ComposeStack(tmp_path_factory.mktemp("compose"))
    running.down(volumes=True)  # what an interrupted earlier run may have left
    try:
        running.up()
        yield running
    finally:
        running.down(volumes=True)  # the volumes hold the clusters' keys: none outlives the test


def declare(stack: ComposeStack, cluster: str) -> None:
    """The declaration of docs/deploy.md ("docker compose"), the way it tells users to apply it:
    sed and kubectl in the seed's container."""
    stack.compose(
        "run", "--rm", "--no-deps", "-T", "--entrypoint", "sh", "seed", "-c",
        f"sed s/CLUSTER/{cluster}/ /deploy/examples/declarations.yaml"
        " | kubectl --kubeconfig /kube/mgmt.kubeconfig apply -f -",
    )  # fmt: skip


async def finished_everywhere(world: World) -> dict[str, Finished]:
    for cluster in world.remotes:
        await asyncio.to_thread(declare, world.stack, cluster)  # type: ignore[arg-type]
    return await world.wait_finished(dict.fromkeys(world.remotes), within=120)


async def test_the_stack_issues_in_every_cluster_what_make_demo_checks(
    stack: ComposeStack,
) -> None:
    async with World(stack) as world:  # type: ignore[arg-type]
        assert await world.issuances() == {"east": None, "west": None}, "needs a fresh stack"
        async with PodLog(world) as pods:
            finished = await finished_everywhere(world)
            root = await world.root_pem()
            for cluster, done in finished.items():
                assert done.status["state"] == "FINISHED"
                cacerts = await world.secret(cluster, ISSUED_SECRET)
                assert cacerts is not None
                # openssl, not our code, builds the chain up to the root the seed made in mgmt.
                verified = openssl_verify(root, cacerts)
                assert verified.returncode == 0, f"{cluster}: {verified.stdout}{verified.stderr}"
                assert cacerts["root-cert.pem"].strip() == root.strip()
                now = dt.datetime.now(dt.UTC)
                check_bundle(Bundle.from_secret_data(cacerts), hosts=HOSTS, org=ORG, now=now)
                # The bouncer replaced the istiod-like and gateway pods once, and recorded them.
                await pods.replaced_once(cluster)
                issuance, bounced = recorded_bounces(await world.pbd(cluster))
                assert issuance == done.issuance
                assert bounced == pods.bounced_names(cluster)
        entries = await check_one_key_and_one_signature(world, finished, known=set())
        assert {e["cluster"] for e in entries.values()} == {"east", "west"}

        # docs/deploy.md's look at mgmt (kubectl in the seed's container) shows the issuer's
        # mirror of every cluster's state.
        def mirrored() -> bool:
            out = stack.kubectl(MGMT, "get", "ic", "-A", "--no-headers")
            rows = [line.split() for line in out.splitlines()]
            return {row[0] for row in rows if "FINISHED" in row} == {"east", "west"}

        await asyncio.to_thread(wait_for, mirrored, within=60, what="mgmt shows FINISHED")
        keys = {c: (await world.secret(c, ISSUED_SECRET) or {})["ca-key.pem"] for c in finished}
    await no_key_material_on_the_bus(stack, keys)


async def no_key_material_on_the_bus(stack: ComposeStack, keys: dict[str, bytes]) -> None:
    forbidden = {n: needle for c, pem in keys.items() for n, needle in private_key_forms(c, pem)}
    async with issuer_bus(stack) as bus:  # type: ignore[arg-type]
        everything = {
            stream: await read_stream(bus, stream, subjects)
            for stream, subjects in (
                ("MESHTRUST", ("meshtrust.v1.>",)),
                ("MESHTRUST_LEDGER", ("meshtrust.ledger.>",)),
                ("KV_meshtrust-desired", ("$KV.meshtrust-desired.>",)),
            )
        }
    types = {json.loads(e.data)["type"] for e in everything["MESHTRUST"]}
    assert types >= {"csr.requested", "certificate.issued", "bounce.requested"}
    for stream, entries in everything.items():
        for entry in entries:
            where = f"{stream} #{entry.sequence} ({entry.subject})"
            assert b"PRIVATE KEY" not in entry.data, where
            for name, needle in forbidden.items():
                assert needle not in entry.data, f"{where} holds {name}"


async def snapshot(stack: ComposeStack) -> dict[str, Any]:
    """What must not change across a restart: every cluster's issuance and serial, the cacerts
    it holds, the ledger, and which issuances the event stream has seen."""
    async with World(stack) as world:  # type: ignore[arg-type]
        await finished_everywhere(world)  # already there after the first test: a no-op
        clusters = {}
        for cluster in world.remotes:
            status = status_of(await world.ic(cluster))
            secret = await world.secret_object(cluster, ISSUED_SECRET)
            assert secret is not None
            clusters[cluster] = {
                "state": status.get("state"),
                "issuance": status.get("issuanceId"),
                "serial": status.get("serialNumber"),
                "cacerts": secret["data"],
                "cacerts resourceVersion": secret["metadata"]["resourceVersion"],
            }
    signed = [(e["issuance"], e["serial_number"]) for e in await ledger(stack)]  # type: ignore[arg-type]
    requested = sorted(
        e["issuance"]
        for e in await events(stack)  # type: ignore[arg-type]
        if e["type"] in ("csr.requested", "certificate.issued", "bounce.requested")
    )
    return {"clusters": clusters, "ledger": signed, "issuances on the bus": requested}


async def durable_consumers(stack: ComposeStack) -> dict[str, tuple[int, int]]:
    """Every durable consumer of the event stream: name -> (pending, unacknowledged)."""
    async with issuer_bus(stack) as bus:  # type: ignore[arg-type]
        infos = await bus.connection.js.consumers_info("MESHTRUST")
    return {
        i.name: (i.num_pending or 0, i.num_ack_pending or 0) for i in infos if i.config.durable_name
    }


async def test_down_and_up_keeps_the_state_and_issues_nothing_again(
    stack: ComposeStack,
) -> None:
    before = await snapshot(stack)
    assert {c["state"] for c in before["clusters"].values()} == {"FINISHED"}
    durables_before = set(await durable_consumers(stack))

    await asyncio.to_thread(stack.down)  # keeps the named volumes
    assert set((await asyncio.to_thread(stack.compose, "config", "--volumes")).split()) == {
        "nats",
        "kube",
    }
    await asyncio.to_thread(stack.up)

    # The same consumers, and the services have handled everything the restart made them read
    # (nothing pending, nothing unacknowledged): only then is "nothing happened" a finding.
    async def drained() -> bool:
        consumers = await durable_consumers(stack)
        assert set(consumers) == durables_before
        return all(counts == (0, 0) for counts in consumers.values())

    await eventually(drained, within=60, interval=0.2, message="the services handle the bus")
    assert await snapshot(stack) == before


async def test_a_crashed_service_is_restarted_by_its_restart_policy(stack: ComposeStack) -> None:
    service = "agent-east"
    container = stack.container(service)
    before = inspect(container)
    assert before["HostConfig"]["RestartPolicy"]["Name"] == "unless-stopped"
    assert before["State"]["Running"]
    # SIGKILL to the service's process from outside (a crash: no goodbye). `docker kill` would
    # not show the policy: Docker never restarts a container the user killed by hand.
    try:
        os.kill(before["State"]["Pid"], signal.SIGKILL)
    except PermissionError:
        # Not root (a user's own Docker): a SIGTERM from inside instead (PID 1 of a container
        # ignores SIGKILL sent from within it); the agent exits 0 and the policy, which
        # restarts whatever the exit code, brings it back just the same.
        docker("exec", container, "sh", "-c", "kill -TERM 1")

    def restarted_and_healthy() -> dict[str, Any] | None:
        state = inspect(container)
        running = state["State"]
        if (
            state["RestartCount"] > before["RestartCount"]
            and running["Running"]
            and running["Pid"] != before["State"]["Pid"]
            and (running.get("Health") or {}).get("Status") == "healthy"
        ):
            return state
        return None

    after = await asyncio.to_thread(
        wait_for, restarted_and_healthy, within=90, what=f"{service} restarted and healthy"
    )
    assert after["RestartCount"] == before["RestartCount"] + 1
    assert stack.container(service) == container  # the same container, restarted in place
    # The restarted agent serves: it still reports FINISHED for the same issuance.
    async with World(stack) as world:  # type: ignore[arg-type]
        status = status_of(await world.ic("east"))
    assert status["state"] == "FINISHED"
