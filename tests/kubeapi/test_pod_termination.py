"""Graceful Pod deletion: a bound Pod stays Terminating (deletionTimestamp + grace period) until
the emulated kubelet removes it; gracePeriodSeconds=0 and unbound Pods go at once; the
ReplicaSet controller replaces a terminating Pod at once and no longer counts it."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from kubernetes_asyncio import client, watch
from kubernetes_asyncio.client.api_client import ApiClient

from devstack.kubeapi import KubeAPI

from .conftest import Kubectl, deployment, eventually, make_client

POD = {
    "metadata": {"name": "p", "labels": {"app": "p"}},
    "spec": {"containers": [{"name": "c", "image": "busybox:1.36"}]},
}


@pytest.fixture
async def slow_cluster() -> AsyncIterator[KubeAPI]:
    """A cluster whose kubelet waits each Pod's whole grace period (30 s by default)."""
    async with KubeAPI(name="grace", pod_ready_delay=0.05, pod_termination_delay=None) as api:
        yield api


@pytest.fixture
async def slow_kubelet(slow_cluster: KubeAPI) -> AsyncIterator[ApiClient]:
    async with await make_client(slow_cluster) as k8s:
        yield k8s


async def running_pod(v1: client.CoreV1Api, body: dict = POD) -> client.V1Pod:
    await v1.create_namespaced_pod("default", body)

    async def bound() -> client.V1Pod | None:
        pod = await v1.read_namespaced_pod(body["metadata"]["name"], "default")
        return pod if pod.status.phase == "Running" else None

    pod = await eventually(bound)
    assert pod.spec.node_name  # the emulated scheduler bound it
    return pod


async def gone(v1: client.CoreV1Api, name: str) -> bool:
    try:
        await v1.read_namespaced_pod(name, "default")
    except client.ApiException as exc:
        return exc.status == 404
    return False


async def test_a_deleted_pod_stays_terminating_for_its_grace_period(
    slow_kubelet: ApiClient,
) -> None:
    v1 = client.CoreV1Api(slow_kubelet)
    pod = await running_pod(v1)
    before = datetime.now(UTC).replace(microsecond=0)
    answered = await v1.delete_namespaced_pod("p", "default")
    assert answered.metadata.deletion_grace_period_seconds == 30
    terminating = await v1.read_namespaced_pod("p", "default")
    md = terminating.metadata
    assert md.deletion_grace_period_seconds == 30
    assert before + timedelta(seconds=30) <= md.deletion_timestamp
    assert md.deletion_timestamp <= datetime.now(UTC) + timedelta(seconds=30)
    assert md.generation == pod.metadata.generation + 1
    # a longer grace period changes nothing; a shorter one moves the deadline
    await v1.delete_namespaced_pod("p", "default", grace_period_seconds=60)
    assert (await v1.read_namespaced_pod("p", "default")).metadata == md
    await v1.delete_namespaced_pod("p", "default", grace_period_seconds=10)
    shorter = (await v1.read_namespaced_pod("p", "default")).metadata
    assert shorter.deletion_grace_period_seconds == 10
    assert shorter.deletion_timestamp == md.deletion_timestamp - timedelta(seconds=20)
    # a status write meanwhile (the kubelet's) does not end the grace period
    status = await v1.read_namespaced_pod_status("p", "default")
    status.status.message = "stopping"
    await v1.replace_namespaced_pod_status("p", "default", status)
    assert (await v1.read_namespaced_pod("p", "default")).status.message == "stopping"
    # grace 0 (kubectl delete --force --grace-period=0) removes it at once
    await v1.delete_namespaced_pod("p", "default", grace_period_seconds=0)
    assert await gone(v1, "p")


async def test_grace_period_comes_from_the_pod_or_the_request(slow_kubelet: ApiClient) -> None:
    v1 = client.CoreV1Api(slow_kubelet)
    short = {**POD, "spec": {**POD["spec"], "terminationGracePeriodSeconds": 7}}
    await running_pod(v1, short)
    assert (
        await v1.delete_namespaced_pod("p", "default")
    ).metadata.deletion_grace_period_seconds == 7
    await running_pod(v1, {**POD, "metadata": {"name": "q"}})
    asked = await v1.delete_namespaced_pod("q", "default", body={"gracePeriodSeconds": 3})
    assert asked.metadata.deletion_grace_period_seconds == 3
    await running_pod(v1, {**POD, "metadata": {"name": "r"}})
    await v1.delete_namespaced_pod("r", "default", body={"gracePeriodSeconds": 0})
    assert await gone(v1, "r")


async def test_a_pod_never_bound_to_a_node_is_deleted_at_once() -> None:
    async with KubeAPI(name="unbound", pod_ready_delay=3600) as api, await make_client(api) as k8s:
        v1 = client.CoreV1Api(k8s)
        await v1.create_namespaced_pod("default", POD)
        await v1.delete_namespaced_pod("p", "default")
        assert await gone(v1, "p")


async def test_the_kubelet_removes_the_pod_after_the_termination_delay(k8s: ApiClient) -> None:
    v1 = client.CoreV1Api(k8s)
    pod = await running_pod(v1)
    seen: list[tuple[str, bool]] = []

    async def follow() -> None:
        async with watch.Watch() as w:
            async for ev in w.stream(
                v1.list_namespaced_pod,
                "default",
                field_selector="metadata.name=p",
                resource_version=pod.metadata.resource_version,
                timeout_seconds=10,
            ):
                seen.append((ev["type"], ev["object"].metadata.deletion_timestamp is not None))
                if ev["type"] == "DELETED":
                    return

    watcher = asyncio.create_task(follow())
    await v1.delete_namespaced_pod("p", "default")
    await asyncio.wait_for(watcher, 10)
    assert seen[0] == ("MODIFIED", True)
    assert seen[-1] == ("DELETED", True)
    assert await gone(v1, "p")


async def test_a_terminating_pod_is_replaced_at_once_and_no_longer_counted(
    slow_kubelet: ApiClient,
) -> None:
    apps, v1 = client.AppsV1Api(slow_kubelet), client.CoreV1Api(slow_kubelet)
    await apps.create_namespaced_deployment("default", deployment("web", 2))

    async def pods() -> list[client.V1Pod]:
        return (await v1.list_namespaced_pod("default", label_selector="app=web")).items

    async def settled() -> list[client.V1Pod] | None:
        rs = (await apps.list_namespaced_replica_set("default")).items
        ready = [p for p in await pods() if p.status.phase == "Running"]
        if len(ready) == 2 and rs and rs[0].status.ready_replicas == 2:
            return ready
        return None

    victim = (await eventually(settled))[0]
    await v1.delete_namespaced_pod(victim.metadata.name, "default")

    async def replaced() -> bool:
        everyone = await pods()
        live = [p for p in everyone if p.metadata.deletion_timestamp is None]
        rs = (await apps.list_namespaced_replica_set("default")).items[0]
        return (
            len(everyone) == 3
            and len(live) == 2
            and all(p.status.phase == "Running" for p in live)
            and rs.status.replicas == 2
            and rs.status.ready_replicas == 2
        )

    await eventually(replaced)
    still = await v1.read_namespaced_pod(victim.metadata.name, "default")
    assert still.metadata.deletion_timestamp is not None


async def test_kubectl_shows_terminating_and_force_deletes(
    slow_cluster: KubeAPI, tmp_path: Path
) -> None:
    kubectl = Kubectl(slow_cluster.write_kubeconfig(tmp_path / "kubeconfig"), tmp_path / "cache")
    await kubectl("apply", "-f", "-", stdin=json.dumps({"apiVersion": "v1", "kind": "Pod", **POD}))
    await kubectl("wait", "--for=jsonpath={.status.phase}=Running", "pod/p", "--timeout=20s")
    res = await kubectl("delete", "pod", "p", "--wait=false")
    assert res.out.strip() == 'pod "p" deleted from default namespace'
    row = (await kubectl("get", "pod", "p", "--no-headers")).out.split()
    assert row[2] == "Terminating"
    forced = await kubectl("delete", "pod", "p", "--force", "--grace-period=0")
    assert 'pod "p" force deleted' in forced.out
    assert (await kubectl("get", "pod", "p", check=False)).rc != 0
