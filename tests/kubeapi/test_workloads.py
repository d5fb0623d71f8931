"""The workload controller: Deployment -> ReplicaSet -> Pods, replacement of deleted Pods,
readiness after the configured delay, status counts, rollouts on template changes, scale,
and garbage collection of dependents."""

from __future__ import annotations

from kubernetes_asyncio import client
from kubernetes_asyncio.client.api_client import ApiClient

from devstack.kubeapi import KubeAPI

from .conftest import deployment, eventually, make_client


async def ready_pods(v1: client.CoreV1Api, selector: str) -> list[client.V1Pod]:
    pods = (await v1.list_namespaced_pod("default", label_selector=selector)).items
    return [
        p
        for p in pods
        if p.metadata.deletion_timestamp is None
        and any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or [])
    ]


async def test_deployment_creates_a_replicaset_and_labelled_ready_pods(k8s: ApiClient) -> None:
    apps, v1 = client.AppsV1Api(k8s), client.CoreV1Api(k8s)
    dep = await apps.create_namespaced_deployment("default", deployment("web", 3))

    async def available() -> client.V1Deployment | None:
        d = await apps.read_namespaced_deployment("web", "default")
        return d if d.status.available_replicas == 3 and d.status.ready_replicas == 3 else None

    d = await eventually(available)
    assert d.status.observed_generation == 1
    assert d.status.updated_replicas == 3
    assert d.status.replicas == 3
    (rs,) = (await apps.list_namespaced_replica_set("default", label_selector="app=web")).items
    assert rs.metadata.owner_references[0].uid == dep.metadata.uid
    assert rs.metadata.owner_references[0].controller
    assert rs.metadata.name == f"web-{rs.metadata.labels['pod-template-hash']}"
    assert rs.status.ready_replicas == 3
    assert rs.spec.replicas == 3
    pods = await ready_pods(v1, "app=web")
    assert len(pods) == 3
    for p in pods:
        assert p.metadata.labels == {
            "app": "web",
            "tier": "web",
            "pod-template-hash": rs.metadata.labels["pod-template-hash"],
        }
        assert p.metadata.name.startswith(f"{rs.metadata.name}-")
        assert p.metadata.owner_references[0].uid == rs.metadata.uid
        assert p.status.phase == "Running"
        assert p.status.pod_ip
        assert p.spec.containers[0].image == "nginx:1.27"


async def test_a_deleted_pod_is_replaced_by_a_new_pod_that_turns_ready(k8s: ApiClient) -> None:
    apps, v1 = client.AppsV1Api(k8s), client.CoreV1Api(k8s)
    await apps.create_namespaced_deployment("default", deployment("web", 2))
    before = await eventually(lambda: _n_ready(v1, 2))
    victim = before[0]
    await v1.delete_namespaced_pod(victim.metadata.name, "default")
    after = await eventually(lambda: _n_ready(v1, 2, exclude=victim.metadata.uid))
    assert victim.metadata.name not in {p.metadata.name for p in after}
    assert victim.metadata.uid not in {p.metadata.uid for p in after}


async def _n_ready(
    v1: client.CoreV1Api, n: int, exclude: str | None = None
) -> list[client.V1Pod] | None:
    pods = await ready_pods(v1, "app=web")
    all_pods = (await v1.list_namespaced_pod("default", label_selector="app=web")).items
    if exclude is not None and any(p.metadata.uid == exclude for p in all_pods):
        return None
    return pods if len(pods) == n and len(all_pods) == n else None


async def test_pods_turn_ready_only_after_the_configured_delay() -> None:
    async with KubeAPI(name="slow", pod_ready_delay=0.5) as api, await make_client(api) as k8s:
        v1 = client.CoreV1Api(k8s)
        await v1.create_namespaced_pod(
            "default",
            {
                "metadata": {"name": "p"},
                "spec": {"containers": [{"name": "c", "image": "busybox"}]},
            },
        )
        loop = __import__("asyncio").get_running_loop()
        start = loop.time()
        pending = await v1.read_namespaced_pod("p", "default")
        assert pending.status.phase == "Pending"

        async def running() -> bool:
            return (await v1.read_namespaced_pod("p", "default")).status.phase == "Running"

        await eventually(running)
        assert loop.time() - start >= 0.4


async def test_a_pod_template_annotation_change_rolls_the_pods(k8s: ApiClient) -> None:
    apps, v1 = client.AppsV1Api(k8s), client.CoreV1Api(k8s)
    await apps.create_namespaced_deployment("default", deployment("web", 2, restartedAt="1"))
    old = {p.metadata.uid for p in await eventually(lambda: _n_ready(v1, 2))}
    await apps.patch_namespaced_deployment(
        "web",
        "default",
        {"spec": {"template": {"metadata": {"annotations": {"restartedAt": "2"}}}}},
    )

    async def rolled() -> list[client.V1Pod] | None:
        pods = await _n_ready(v1, 2)
        if pods and not ({p.metadata.uid for p in pods} & old):
            d = await apps.read_namespaced_deployment("web", "default")
            if (
                d.status.updated_replicas == 2
                and d.status.available_replicas == 2
                and d.status.observed_generation == 2
            ):
                return pods
        return None

    pods = await eventually(rolled)
    assert all(p.metadata.annotations == {"restartedAt": "2"} for p in pods)
    rss = (await apps.list_namespaced_replica_set("default")).items
    assert sorted(rs.spec.replicas for rs in rss) == [0, 2]
    revisions = sorted(rs.metadata.annotations["deployment.kubernetes.io/revision"] for rs in rss)
    assert revisions == ["1", "2"]


async def test_scaling_through_the_scale_subresource(k8s: ApiClient) -> None:
    apps, v1 = client.AppsV1Api(k8s), client.CoreV1Api(k8s)
    await apps.create_namespaced_deployment("default", deployment("web", 1))
    await eventually(lambda: _n_ready(v1, 1))
    scale = await apps.read_namespaced_deployment_scale("web", "default")
    assert scale.spec.replicas == 1
    await apps.patch_namespaced_deployment_scale("web", "default", {"spec": {"replicas": 3}})
    await eventually(lambda: _n_ready(v1, 3))
    await apps.patch_namespaced_deployment_scale("web", "default", {"spec": {"replicas": 1}})
    await eventually(lambda: _n_ready(v1, 1))


async def test_deleting_a_deployment_garbage_collects_replicasets_and_pods(k8s: ApiClient) -> None:
    apps, v1 = client.AppsV1Api(k8s), client.CoreV1Api(k8s)
    await apps.create_namespaced_deployment("default", deployment("web", 2))
    await eventually(lambda: _n_ready(v1, 2))
    await apps.delete_namespaced_deployment("web", "default")

    async def empty() -> bool:
        rss = (await apps.list_namespaced_replica_set("default")).items
        pods = (await v1.list_namespaced_pod("default")).items
        return not rss and not pods

    await eventually(empty)


async def test_orphan_propagation_keeps_the_dependents(k8s: ApiClient) -> None:
    apps, v1 = client.AppsV1Api(k8s), client.CoreV1Api(k8s)
    await apps.create_namespaced_deployment("default", deployment("web", 1))
    await eventually(lambda: _n_ready(v1, 1))
    await apps.delete_namespaced_deployment("web", "default", propagation_policy="Orphan")
    (rs,) = (await apps.list_namespaced_replica_set("default")).items
    assert not rs.metadata.owner_references
    assert len(await ready_pods(v1, "app=web")) == 1


async def test_foreground_deletion_waits_for_dependents(k8s: ApiClient) -> None:
    apps, v1 = client.AppsV1Api(k8s), client.CoreV1Api(k8s)
    await apps.create_namespaced_deployment("default", deployment("web", 1))
    (pod,) = await eventually(lambda: _n_ready(v1, 1))
    # a finalizer on the Pod holds the whole chain: Pod -> ReplicaSet -> Deployment
    await v1.patch_namespaced_pod(
        pod.metadata.name, "default", {"metadata": {"finalizers": ["example.com/hold"]}}
    )
    await apps.delete_namespaced_deployment("web", "default", propagation_policy="Foreground")

    async def pod_terminating() -> bool:
        p = await v1.read_namespaced_pod(pod.metadata.name, "default")
        return p.metadata.deletion_timestamp is not None

    await eventually(pod_terminating)
    held = await apps.read_namespaced_deployment("web", "default")
    assert "foregroundDeletion" in held.metadata.finalizers
    assert held.metadata.deletion_timestamp
    await v1.patch_namespaced_pod(pod.metadata.name, "default", {"metadata": {"finalizers": None}})

    async def all_gone() -> bool:
        try:
            await apps.read_namespaced_deployment("web", "default")
        except client.ApiException as exc:
            return exc.status == 404 and not (await v1.list_namespaced_pod("default")).items
        return False

    await eventually(all_gone)


async def test_a_recreated_deployment_adopts_orphaned_replicasets_and_pods(k8s: ApiClient) -> None:
    apps, v1 = client.AppsV1Api(k8s), client.CoreV1Api(k8s)
    await apps.create_namespaced_deployment("default", deployment("web", 2))
    pods = {p.metadata.uid for p in await eventually(lambda: _n_ready(v1, 2))}
    await apps.delete_namespaced_deployment("web", "default", propagation_policy="Orphan")
    again = await apps.create_namespaced_deployment("default", deployment("web", 2))

    async def adopted() -> bool:
        (rs,) = (await apps.list_namespaced_replica_set("default")).items
        d = await apps.read_namespaced_deployment("web", "default")
        return bool(
            rs.metadata.owner_references
            and rs.metadata.owner_references[0].uid == again.metadata.uid
            and d.status.ready_replicas == 2
        )

    await eventually(adopted)
    assert {p.metadata.uid for p in await ready_pods(v1, "app=web")} == pods  # no new pods


async def test_owner_references_of_any_kind_are_collected_including_dangling_ones(
    k8s: ApiClient,
) -> None:
    """The garbage collector follows ownerReferences of every kind, through chains, and
    collects an object created with an owner that does not exist (kube-controller-manager's
    graph does the same); an object with one owner left stays."""
    v1 = client.CoreV1Api(k8s)

    def configmap(name: str, *owners: client.V1ConfigMap) -> dict[str, object]:
        refs = [
            {"apiVersion": "v1", "kind": "ConfigMap", "name": o.metadata.name}
            | {"uid": o.metadata.uid}
            for o in owners
        ]
        return {"metadata": {"name": name, "ownerReferences": refs}, "data": {"k": "v"}}

    top = await v1.create_namespaced_config_map("default", configmap("top"))
    other = await v1.create_namespaced_config_map("default", configmap("other"))
    middle = await v1.create_namespaced_config_map("default", configmap("middle", top))
    await v1.create_namespaced_config_map("default", configmap("leaf", middle))
    await v1.create_namespaced_config_map("default", configmap("shared", top, other))
    ghost = client.V1ConfigMap(metadata=client.V1ObjectMeta(name="ghost", uid="no-such-uid"))
    await v1.create_namespaced_config_map("default", configmap("dangling", ghost))
    await v1.delete_namespaced_config_map("top", "default")

    async def collected() -> bool:
        names = {c.metadata.name for c in (await v1.list_namespaced_config_map("default")).items}
        return not names & {"top", "middle", "leaf", "dangling"}

    await eventually(collected)
    names = {c.metadata.name for c in (await v1.list_namespaced_config_map("default")).items}
    assert {"other", "shared"} <= names
