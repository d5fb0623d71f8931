"""How the agent saves round trips without trusting a cache: early reads settled against the
fresh spec, the applier creating before reading, and the key Secret written once per issuance.
All against the emulator (and, for the flow, a real nats-server)."""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Any

from agent.agent_testing import AgentProcess, FakeIssuer, ic_body, state_of
from k8s.harness import eventually

from services.agent.desired import DesiredState, queue_key
from services.agent.objects import ATTEMPT, REQUESTED_AT, AgentObjects, key_secret_name
from shared.api.meta import ObjectKey
from shared.bus import Bus
from shared.events import DESIRED_BUCKET, DesiredKind, DesiredObject, desired_key
from shared.k8s.client import KubeClient
from shared.k8s.events import EventRecorder
from shared.k8s.informer import EventType, Informer, InformerEvent
from shared.k8s.resources import EVENTS, ISSUED_CERTIFICATES, SECRETS

if TYPE_CHECKING:
    from devstack.kubeapi import KubeAPI


def secret(namespace: str, name: str, value: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace},
        "stringData": {"v": value},
    }


async def test_an_early_read_is_kept_only_for_the_secret_the_fresh_spec_names(
    kube: KubeClient, namespace: str, kubeapi: KubeAPI
) -> None:
    objects = AgentObjects(kube)
    await kube.create(SECRETS, secret(namespace, "guessed", "a"))
    await kube.create(SECRETS, secret(namespace, "named", "b"))
    early = await objects.get_secret_early(ObjectKey(namespace, "guessed"))
    await kube.delete(SECRETS, "guessed", namespace=namespace)

    kept = await objects.settle(early, ObjectKey(namespace, "guessed"))
    assert kept is not None
    assert kept["metadata"]["name"] == "guessed"  # the early copy: no second read
    other = await objects.settle(early, ObjectKey(namespace, "named"))
    assert other is not None
    assert other["metadata"]["name"] == "named"  # another Secret named: read fresh

    kubeapi.faults.fail_next(1, status=500, path_contains="/secrets/named")
    failed = await objects.get_secret_early(ObjectKey(namespace, "named"))
    assert not failed.read
    again = await objects.settle(failed, ObjectKey(namespace, "named"))
    assert again is not None
    assert again["metadata"]["name"] == "named"  # a failed early read is read again
    none = await objects.get_secret_early(None)
    assert not none.read
    assert await objects.settle(none, ObjectKey(namespace, "absent")) is None


async def desired_state(
    kube: KubeClient, bus: Bus, namespace: str, name: str, spec: dict[str, Any]
) -> tuple[DesiredState, asyncio.Task[None]]:
    """An applier whose IssuedCertificate informer never ran: its cache is behind everything."""
    bucket = await bus.bucket(DESIRED_BUCKET)
    value = DesiredObject(
        cluster="east",
        kind=DesiredKind.ISSUED_CERTIFICATE,
        name=name,
        namespace=namespace,
        uid="uid-1",
        generation=1,
        spec=spec,
    )
    await bucket.put(
        desired_key("east", DesiredKind.ISSUED_CERTIFICATE, name), value.model_dump_json().encode()
    )
    state = DesiredState(
        cluster="east",
        objects=AgentObjects(kube),
        recorder=EventRecorder(kube, component="meshtrust-agent", instance="east-test"),
        informers={DesiredKind.ISSUED_CERTIFICATE: [Informer(kube, ISSUED_CERTIFICATES)]},
        namespaces=[],
    )
    watching = asyncio.create_task(state.watch(bucket))
    await asyncio.wait_for(state.synced.wait(), 10)
    return state, watching


async def stopped(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def test_the_applier_creates_before_reading_and_sees_what_its_cache_missed(
    kube: KubeClient, namespace: str, bus: Bus
) -> None:
    spec = ic_body("istio-ca", namespace)["spec"]
    unmanaged = ic_body("local", namespace)
    unmanaged["spec"]["org"] = "hand-made"
    await kube.create(ISSUED_CERTIFICATES, unmanaged)
    for name in ("istio-ca", "local"):
        state, watching = await desired_state(kube, bus, namespace, name, spec)
        try:
            key = desired_key("east", DesiredKind.ISSUED_CERTIFICATE, name)
            await state.reconcile(queue_key(key))
            if name == "istio-ca":
                created = await kube.get(ISSUED_CERTIFICATES, name, namespace=namespace)
                assert created["spec"]["org"] == "meshtrust"
                mapper = state.mapper(DesiredKind.ISSUED_CERTIFICATE)
                own = InformerEvent(EventType.ADDED, ObjectKey(namespace, name), created)
                assert list(mapper(own)) == []  # its own create, seen back: no second pass
                edited = {**created, "metadata": {**created["metadata"], "resourceVersion": "0"}}
                later = InformerEvent(EventType.ADDED, ObjectKey(namespace, name), edited)
                assert list(mapper(later)) == [queue_key(key)]  # any other version counts
        finally:
            await stopped(watching)
    local = await kube.get(ISSUED_CERTIFICATES, "local", namespace=namespace)
    assert local["spec"]["org"] == "hand-made"  # the create met AlreadyExists: read, left alone
    events = await kube.list(EVENTS, namespace=namespace)
    assert [e["reason"] for e in events.items if e["involvedObject"]["name"] == "local"] == [
        "NotManaged"
    ]


async def test_the_key_secret_is_written_once_per_issuance_and_carries_its_send_time(
    kube: KubeClient, namespace: str, agent: AgentProcess, issuer: FakeIssuer
) -> None:
    events: list[tuple[str, dict[str, Any]]] = []
    name = key_secret_name("istio-ca")

    since = (await kube.list(SECRETS, namespace=namespace)).resource_version

    async def record() -> None:
        async with kube.watch(SECRETS, namespace=namespace, resource_version=since) as stream:
            async for event in stream:
                if event.object.get("metadata", {}).get("name") == name:
                    events.append((event.type, event.object))  # noqa: PERF401 - read live

    watching = asyncio.create_task(record())
    try:
        await kube.create(ISSUED_CERTIFICATES, ic_body("istio-ca", namespace))

        async def finished() -> bool:
            return await state_of(kube, namespace, "istio-ca") == "FINISHED"

        await eventually(finished, within=20, message="FINISHED")
        await eventually(
            lambda: [t for t, _ in events] == ["ADDED", "DELETED"],
            message=f"one create and one delete of the key Secret, saw {[t for t, _ in events]}",
        )
    finally:
        await stopped(watching)
    notes = events[0][1]["metadata"]["annotations"]
    assert notes[ATTEMPT] == "1"
    assert notes[REQUESTED_AT].endswith("Z")
    assert len(issuer.requests) == 1
