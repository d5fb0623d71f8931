"""The demo topology end to end: mgmt + east + west as separate OS processes (devstack.stack).

One stack for the module. The first test declares the demo's IssuedCertificates and directives
(east with ECDSA P-256, west with RSA-4096, so that the leak check sees both kinds of key) and
follows them to FINISHED; the others use what it left (and get it there themselves if run alone).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import re
from collections.abc import Iterator

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
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
    IC_NAME,
    IC_NAMESPACE,
    ISSUED_SECRET,
    ORG,
    Finished,
    PodLog,
    World,
    declarations,
    ensure_running,
    recorded_bounces,
    running_stack,
    status_of,
)

from devstack.natsconfig import public_key
from devstack.stack import MGMT, Stack
from shared.bus import Bus, NatsSettings, PublishError
from shared.events import (
    CertificateState,
    CsrRequested,
    CsrRequestedData,
    StatusChanged,
    StatusChangedData,
    new_issuance_id,
)
from shared.k8s.resources import ISSUED_CERTIFICATES
from shared.pki import (
    Bundle,
    KeyAlgorithm,
    KeySpec,
    build_csr,
    check_bundle,
    generate_private_key,
    load_private_key,
)
from support.waiting import eventually

REMOTES = ["east", "west"]
KEYS = {"east": ("ECDSA", 256), "west": ("RSA", 4096)}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("e2e-demo")
    with running_stack(root, remotes=REMOTES, pod_ready_delay=0.2) as running:
        yield running


async def declare(world: World) -> None:
    for cluster in world.remotes:
        algorithm, size = KEYS[cluster]
        text = declarations(cluster, key_algorithm=algorithm, key_size=size)
        await asyncio.to_thread(world.stack.kubectl, MGMT, "apply", "-f", "-", stdin=text)


async def finished_everywhere(world: World) -> dict[str, Finished]:
    """Declare (idempotent) and wait until every cluster is FINISHED."""
    await declare(world)
    return await world.wait_finished(dict.fromkeys(world.remotes), within=90)


@pytest.mark.timeout(180)
async def test_the_demo_reaches_finished_in_both_clusters_chained_to_the_shared_root(
    stack: Stack,
) -> None:
    ensure_running(stack)
    async with World(stack) as world:
        assert await world.issuances() == {"east": None, "west": None}, "needs a fresh stack"
        async with PodLog(world) as pods:
            finished = await finished_everywhere(world)
            root = await world.root_pem()
            for cluster, done in finished.items():
                cacerts = await world.secret(cluster, ISSUED_SECRET)
                assert cacerts is not None
                # Independent of our code: openssl builds the chain up to the shared root.
                verified = openssl_verify(root, cacerts)
                assert verified.returncode == 0, f"{cluster}: {verified.stdout}{verified.stderr}"
                assert verified.stdout.strip().endswith(": OK")
                assert cacerts["root-cert.pem"].strip() == root.strip()
                now = dt.datetime.now(dt.UTC)
                check_bundle(Bundle.from_secret_data(cacerts), hosts=HOSTS, org=ORG, now=now)
                algorithm, size = KEYS[cluster]
                key = load_private_key(cacerts["ca-key.pem"])
                kind = rsa.RSAPrivateKey if algorithm == "RSA" else ec.EllipticCurvePrivateKey
                assert isinstance(key, kind)
                assert key.key_size == size

                # Bounced once: the pods there before were deleted, each got one replacement
                # that was not deleted again, and the directive records exactly those pods, per
                # selector, for this issuance.
                await pods.replaced_once(cluster)
                issuance, bounced = recorded_bounces(await world.pbd(cluster))
                assert issuance == done.issuance
                assert bounced == pods.bounced_names(cluster)

        # One key and one signature per issuance (ledger, CSRs on the bus, cacerts).
        entries = await check_one_key_and_one_signature(world, finished, known=set())
        assert {e["cluster"] for e in await ledger(stack)} == set(REMOTES)
        assert all(e["signed_by"] for e in entries.values())

        # `kubectl get ic -A` in mgmt shows every cluster's state (the issuer's mirror).
        async def mirrored() -> bool:
            for cluster in REMOTES:
                declared = await world.kube[MGMT].get(
                    ISSUED_CERTIFICATES, IC_NAME, namespace=cluster
                )
                if status_of(declared).get("state") != "FINISHED":
                    return False
            return True

        await eventually(mirrored, within=30, message="mgmt mirrors FINISHED for both")


def west_agent_settings(stack: Stack) -> NatsSettings:
    return stack.nats_settings(
        "agent-west", request_timeout=0.5, publish_deadline=2.0, connect_deadline=10.0
    )


async def test_west_s_agent_may_not_publish_a_csr_on_east_s_subject(stack: Stack) -> None:
    ensure_running(stack)
    async with World(stack) as world:
        await finished_everywhere(world)
        east_before = status_of(await world.ic("east"))
        async with issuer_bus(stack) as bus:
            last = (await bus.connection.js.stream_info("MESHTRUST")).state.last_seq

        # A CSR the issuer would sign for east (right hosts, org, declaration), sent by west.
        declared = await world.kube[MGMT].get(ISSUED_CERTIFICATES, IC_NAME, namespace="east")
        key = generate_private_key(KeySpec(algorithm=KeyAlgorithm.ECDSA, size=256))
        forged = CsrRequested(
            source="agent/agent-west-0",
            cluster="east",
            issuance=new_issuance_id(),
            data=CsrRequestedData(
                name=IC_NAME,
                declaration_uid=declared["metadata"]["uid"],
                declaration_generation=declared["metadata"]["generation"],
                csr_pem=build_csr(key, org=ORG, name=IC_NAME, hosts=HOSTS).decode(),
            ),
        )
        # The same credentials may publish on west's own subjects (so the refusal is about
        # the subject, not a bad password): a status for an object nobody declared, which the
        # issuer's mirror ignores.
        probe = StatusChanged(
            source="agent/agent-west-0",
            cluster="west",
            issuance=new_issuance_id(),
            data=StatusChangedData(
                name="e2e-permission-probe",
                namespace=IC_NAMESPACE,
                state=CertificateState.PENDING,
                observed_generation=0,
            ),
        )
        async with Bus.connect(west_agent_settings(stack)) as west:
            allowed = await west.publish(probe)
            assert not allowed.duplicate
            with pytest.raises(PublishError, match=r"meshtrust\.v1\.east\.csr\.requested"):
                await west.publish(forged)

        # It was NATS that refused it: the server logged the violation for that user.
        west_key = public_key((stack.credentials / "agent-west.nk").read_bytes().strip())
        violation = re.compile(
            rf"{west_key}.*Publish Violation.*meshtrust\.v1\.east\.csr\.requested"
        )
        assert violation.search((stack.logs / "nats.log").read_text()), "no Publish Violation"

        async with issuer_bus(stack) as bus:
            after = await read_stream(bus, "MESHTRUST", ("meshtrust.v1.>",))
        new = [json.loads(e.data) for e in after if e.sequence > last]
        assert probe.issuance in {e["issuance"] for e in new}
        # Nothing of the forged request was stored, and nothing for east came of it.
        assert [e for e in new if e["issuance"] == forged.issuance] == []
        assert [e for e in new if e["cluster"] == "east" and e["type"] != "status.changed"] == []
        assert forged.issuance not in {e["issuance"] for e in await ledger(stack)}
        assert status_of(await world.ic("east")) == east_before


async def test_no_private_key_travels_on_the_bus(stack: Stack) -> None:
    ensure_running(stack)
    async with World(stack) as world:
        await finished_everywhere(world)
        keys = {}
        for cluster in REMOTES:
            cacerts = await world.secret(cluster, ISSUED_SECRET)
            assert cacerts is not None
            keys[cluster] = cacerts["ca-key.pem"]
    forbidden = {
        name: needle for c, pem in keys.items() for name, needle in private_key_forms(c, pem)
    }

    messages = await events(stack)
    assert {m["type"] for m in messages} >= {
        "csr.requested",
        "certificate.issued",
        "bounce.requested",
        "bounce.completed",
        "status.changed",
    }, "the run put every kind of event on the bus"
    async with issuer_bus(stack) as bus:
        everything = {
            stream: await read_stream(bus, stream, subjects)
            for stream, subjects in (
                ("MESHTRUST", ("meshtrust.v1.>",)),
                ("MESHTRUST_LEDGER", ("meshtrust.ledger.>",)),
                ("KV_meshtrust-desired", ("$KV.meshtrust-desired.>",)),
            )
        }
    assert len(everything["MESHTRUST"]) == len(messages)
    for stream, entries in everything.items():
        for entry in entries:
            where = f"{stream} #{entry.sequence} ({entry.subject})"
            assert b"PRIVATE KEY" not in entry.data, where
            for name, needle in forbidden.items():
                assert needle not in entry.data, f"{where} holds {name}"
