"""Events: events.k8s.io/v1 serves the core v1 Events (one object, two views), and the
workload controllers record the Events kube-controller-manager's do, so `kubectl describe`
shows them."""

from __future__ import annotations

from datetime import UTC, datetime

from kubernetes_asyncio import client, watch
from kubernetes_asyncio.client.api_client import ApiClient

from .conftest import Kubectl, deployment, eventually

NOW = datetime(2026, 12, 6, 12, 0, 0, tzinfo=UTC)


async def test_an_events_v1_event_is_a_core_event_seen_another_way(k8s: ApiClient) -> None:
    events_v1, v1 = client.EventsV1Api(k8s), client.CoreV1Api(k8s)
    cm = await v1.create_namespaced_config_map("default", {"metadata": {"name": "c"}})
    regarding = {"kind": "ConfigMap", "namespace": "default", "name": "c", "uid": cm.metadata.uid}
    created = await events_v1.create_namespaced_event(
        "default",
        {
            "metadata": {"name": "c.1"},
            "eventTime": NOW.isoformat().replace("+00:00", "Z"),
            "reportingController": "example.com/tester",
            "reportingInstance": "tester-1",
            "action": "Check",
            "reason": "Checked",
            "note": "all good",
            "type": "Normal",
            "regarding": regarding,
        },
    )
    assert created.regarding.name == "c"
    core = await v1.read_namespaced_event("c.1", "default")
    assert core.involved_object.uid == cm.metadata.uid
    assert (core.message, core.reporting_component) == ("all good", "example.com/tester")
    # and the other way round, through list, field selectors and watch
    await v1.create_namespaced_event(
        "default",
        {
            "metadata": {"name": "c.2"},
            # (without an eventTime, kubernetes-asyncio's events.k8s.io model refuses the
            # Event, as against kube-apiserver: a client bug, not ours)
            "eventTime": NOW.isoformat().replace("+00:00", "Z"),
            "involvedObject": regarding,
            "reason": "Touched",
            "message": "core event",
            "source": {"component": "old-style"},
            "count": 3,
            "type": "Warning",
        },
    )
    listed = await events_v1.list_namespaced_event(
        "default", field_selector="regarding.name=c,reason=Touched"
    )
    [seen] = listed.items
    assert (seen.note, seen.deprecated_count, seen.deprecated_source.component) == (
        "core event",
        3,
        "old-style",
    )
    async with watch.Watch() as w:
        stream = w.stream(events_v1.list_namespaced_event, "default", timeout_seconds=1)
        notes = {ev["object"].note async for ev in stream}
    assert notes == {"all good", "core event"}
    await events_v1.delete_namespaced_event("c.1", "default")
    assert [e.metadata.name for e in (await v1.list_namespaced_event("default")).items] == ["c.2"]


async def test_events_v1_is_discovered(kubectl: Kubectl) -> None:
    rows = (await kubectl("api-resources", "--api-group=events.k8s.io", "--no-headers")).out
    assert rows.split()[:4] == ["events", "ev", "events.k8s.io/v1", "true"]


async def test_controllers_record_scaling_and_pod_events(k8s: ApiClient, kubectl: Kubectl) -> None:
    apps, v1 = client.AppsV1Api(k8s), client.CoreV1Api(k8s)
    await apps.create_namespaced_deployment("default", deployment("web", 2))

    async def reasons(kind: str) -> list[tuple[str, str, str]]:
        found = await v1.list_namespaced_event(
            "default", field_selector=f"involvedObject.kind={kind}"
        )
        return [(e.reason, e.message, e.source.component) for e in found.items]

    async def created_two() -> list[tuple[str, str, str]] | None:
        got = await reasons("ReplicaSet")
        return got if len(got) == 2 else None

    rs_events = await eventually(created_two)
    [rs] = (await apps.list_namespaced_replica_set("default")).items
    assert {r for r, _, _ in rs_events} == {"SuccessfulCreate"}
    assert all(m.startswith("Created pod: web-") for _, m, _ in rs_events)
    assert {c for _, _, c in rs_events} == {"replicaset-controller"}
    assert await reasons("Deployment") == [
        (
            "ScalingReplicaSet",
            f"Scaled up replica set {rs.metadata.name} from 0 to 2",
            "deployment-controller",
        )
    ]
    await apps.patch_namespaced_deployment_scale("web", "default", {"spec": {"replicas": 1}})

    async def scaled_down() -> bool:
        deploy = [m for _, m, _ in await reasons("Deployment")]
        deleted = [m for r, m, _ in await reasons("ReplicaSet") if r == "SuccessfulDelete"]
        return (
            f"Scaled down replica set {rs.metadata.name} from 2 to 1" in deploy
            and len(deleted) == 1
        )

    await eventually(scaled_down)
    described = (await kubectl("describe", "deployment", "web")).out
    events = described[described.index("Events:") :]
    assert "ScalingReplicaSet" in events
    assert f"Scaled up replica set {rs.metadata.name} from 0 to 2" in events
    assert "deployment-controller" in events
