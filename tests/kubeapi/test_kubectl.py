"""The emulator through the real kubectl binary: discovery, OpenAPI-driven validation,
client-side and server-side apply, get (printer columns), -o yaml, describe, wait, watch, delete."""

from __future__ import annotations

import asyncio
import json

import yaml

from devstack.kubeapi import KubeAPI

from .conftest import WIDGET_CRD, Kubectl, deployment, eventually

LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"
WIDGET_YAML = """
apiVersion: example.com/v1
kind: Widget
metadata:
  name: w1
  labels: {team: blue}
spec:
  size: 3
  tags: [a]
"""


async def install_crd(kubectl: Kubectl) -> None:
    res = await kubectl("apply", "-f", "-", stdin=yaml.safe_dump(WIDGET_CRD))
    assert (
        res.out.strip()
        == "customresourcedefinition.apiextensions.k8s.io/widgets.example.com created"
    )


async def test_version_and_api_resources(kubectl: Kubectl) -> None:
    version = await kubectl.json("version")
    assert version["serverVersion"]["gitVersion"].startswith("v1.")
    res = await kubectl("api-resources", "--no-headers")
    rows = {line.split()[0]: line.split() for line in res.out.splitlines()}
    assert {"pods", "deployments", "leases", "customresourcedefinitions", "namespaces"} <= set(rows)
    assert rows["deployments"][1] == "deploy"


async def test_client_side_apply_of_a_crd_and_custom_resources(kubectl: Kubectl) -> None:
    await install_crd(kubectl)
    created = await kubectl("apply", "-f", "-", stdin=WIDGET_YAML)
    assert created.out.strip() == "widget.example.com/w1 created"
    unchanged = await kubectl("apply", "-f", "-", stdin=WIDGET_YAML)
    assert unchanged.out.strip() == "widget.example.com/w1 unchanged"
    # dropping a field from the manifest removes it (three-way merge via last-applied)
    changed = await kubectl(
        "apply",
        "-f",
        "-",
        stdin=WIDGET_YAML.replace("  tags: [a]\n", "").replace("size: 3", "size: 4"),
    )
    assert changed.out.strip() == "widget.example.com/w1 configured"
    obj = await kubectl.json("get", "widget", "w1")
    assert obj["spec"] == {"size": 4, "color": "blue"}
    assert "kubectl.kubernetes.io/last-applied-configuration" in obj["metadata"]["annotations"]
    assert obj["metadata"]["generation"] == 2


async def test_apply_rejects_invalid_and_unknown_fields_without_validate_false(
    kubectl: Kubectl,
) -> None:
    await install_crd(kubectl)
    invalid = await kubectl(
        "apply", "-f", "-", stdin=WIDGET_YAML.replace("size: 3", "size: 99"), check=False
    )
    assert invalid.rc != 0
    assert (
        "spec.size: Invalid value: 99: spec.size in body should be less than or equal to 10"
        in invalid.err
    )
    typo = yaml.safe_dump(
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "lables": {}}}
    )
    rejected = await kubectl("apply", "-f", "-", stdin=typo, check=False)
    assert rejected.rc != 0
    assert 'unknown field "metadata.lables"' in rejected.err
    unknown = await kubectl(
        "apply", "-f", "-", stdin=WIDGET_YAML.replace("size: 3", "size: 3\n  sise: 3"), check=False
    )
    assert unknown.rc != 0
    assert 'unknown field "spec.sise"' in unknown.err


async def test_get_shows_printer_columns_and_short_names(kubectl: Kubectl) -> None:
    await install_crd(kubectl)
    await kubectl("apply", "-f", "-", stdin=WIDGET_YAML)
    await kubectl(
        "patch",
        "widget",
        "w1",
        "--subresource=status",
        "--type=merge",
        "-p",
        '{"status":{"phase":"Ready"}}',
    )
    out = (await kubectl("get", "wd")).out.splitlines()
    assert out[0].split() == ["NAME", "SIZE", "PHASE", "READY", "AGE"]
    row = out[1].split()
    assert row[:3] == ["w1", "3", "Ready"]
    assert len(row) == 4
    assert row[3].endswith("s")
    labelled = await kubectl("get", "widgets", "-l", "team=blue", "-o", "name")
    assert labelled.out.strip() == "widget.example.com/w1"
    assert (await kubectl("get", "widgets", "-l", "team=red", "-o", "name")).out.strip() == ""


async def test_get_yaml_describe_and_delete(kubectl: Kubectl) -> None:
    await install_crd(kubectl)
    await kubectl("apply", "-f", "-", stdin=WIDGET_YAML)
    doc = yaml.safe_load((await kubectl("get", "widget", "w1", "-o", "yaml")).out)
    assert doc["kind"] == "Widget"
    assert doc["metadata"]["uid"]
    assert doc["spec"]["size"] == 3
    described = (await kubectl("describe", "widget", "w1")).out
    assert "Name:         w1" in described
    assert "Size:   3" in described
    assert "Events:" in described
    deleted = await kubectl("delete", "widget", "w1")
    assert 'widget.example.com "w1" deleted' in deleted.out
    missing = await kubectl("get", "widget", "w1", check=False)
    assert missing.rc != 0
    assert 'widgets.example.com "w1" not found' in missing.err


async def test_server_side_apply_and_conflicts(kubectl: Kubectl) -> None:
    await install_crd(kubectl)
    first = await kubectl("apply", "--server-side", "-f", "-", stdin=WIDGET_YAML)
    assert first.out.strip() == "widget.example.com/w1 serverside-applied"
    conflict = await kubectl(
        "apply",
        "--server-side",
        "--field-manager=other",
        "-f",
        "-",
        stdin=WIDGET_YAML.replace("size: 3", "size: 5"),
        check=False,
    )
    assert conflict.rc != 0
    assert "conflict" in conflict.err.lower()
    assert ".spec.size" in conflict.err
    forced = await kubectl(
        "apply",
        "--server-side",
        "--field-manager=other",
        "--force-conflicts",
        "-f",
        "-",
        stdin=WIDGET_YAML.replace("size: 3", "size: 5"),
    )
    assert forced.rc == 0
    obj = await kubectl.json("get", "widget", "w1", "--show-managed-fields")
    assert obj["spec"]["size"] == 5
    assert {m["manager"] for m in obj["metadata"]["managedFields"]} >= {"kubectl", "other"}


async def test_wait_for_jsonpath_and_condition(kubectl: Kubectl) -> None:
    await install_crd(kubectl)
    established = await kubectl(
        "wait", "--for=condition=Established", "crd/widgets.example.com", "--timeout=10s"
    )
    assert "condition met" in established.out
    await kubectl("apply", "-f", "-", stdin=WIDGET_YAML)
    waiter = asyncio.create_task(
        kubectl("wait", "--for=jsonpath={.status.phase}=Ready", "widget/w1", "--timeout=20s")
    )
    await asyncio.sleep(0)  # let kubectl start; correctness does not depend on it
    await kubectl(
        "patch",
        "widget",
        "w1",
        "--subresource=status",
        "--type=merge",
        "-p",
        '{"status":{"phase":"Ready"}}',
    )
    res = await waiter
    assert "condition met" in res.out


async def test_get_watch_prints_changes(kubectl: Kubectl) -> None:
    await install_crd(kubectl)
    await kubectl("apply", "-f", "-", stdin=WIDGET_YAML)
    proc = await asyncio.create_subprocess_exec(
        *kubectl.argv("get", "widgets", "--watch", "--output-watch-events"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    try:
        header = (await asyncio.wait_for(proc.stdout.readline(), 10)).decode().split()
        assert header == ["EVENT", "NAME", "SIZE", "PHASE", "READY", "AGE"]
        first = (await asyncio.wait_for(proc.stdout.readline(), 10)).decode().split()
        assert first[:3] == ["ADDED", "w1", "3"]
        await kubectl("patch", "widget", "w1", "--type=merge", "-p", '{"spec":{"size":6}}')
        second = (await asyncio.wait_for(proc.stdout.readline(), 10)).decode().split()
        assert second[:3] == ["MODIFIED", "w1", "6"]
        await kubectl("delete", "widget", "w1")
        third = (await asyncio.wait_for(proc.stdout.readline(), 10)).decode().split()
        assert third[:2] == ["DELETED", "w1"]
    finally:
        proc.terminate()
        await proc.communicate()


async def test_builtin_kinds_apply_get_and_rollout(kubectl: Kubectl) -> None:
    manifest = yaml.safe_dump(deployment("web", 2))
    assert (
        await kubectl("apply", "-f", "-", stdin=manifest)
    ).out.strip() == "deployment.apps/web created"
    await kubectl("rollout", "status", "deployment/web", "--timeout=20s")
    out = (await kubectl("get", "deploy", "web")).out.splitlines()
    assert out[0].split() == ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]
    assert out[1].split()[:4] == ["web", "2/2", "2", "2"]
    pods = (await kubectl("get", "pods", "-l", "app=web", "--no-headers")).out.splitlines()
    assert len(pods) == 2
    assert all(p.split()[1:3] == ["1/1", "Running"] for p in pods)
    # client-side apply of a built-in kind: a strategic merge patch from kubectl's own types
    changed = deployment("web", 3)
    changed["spec"]["template"]["spec"]["containers"][0]["env"] = [{"name": "MODE", "value": "x"}]
    assert (
        await kubectl("apply", "-f", "-", stdin=yaml.safe_dump(changed))
    ).out.strip() == "deployment.apps/web configured"
    await kubectl("rollout", "status", "deployment/web", "--timeout=20s")
    dep = await kubectl.json("get", "deploy", "web")
    assert dep["spec"]["replicas"] == 3
    assert dep["spec"]["template"]["spec"]["containers"][0]["env"] == [
        {"name": "MODE", "value": "x"}
    ]
    described = (await kubectl("describe", "deployment", "web")).out
    assert "NewReplicaSet:" in described
    assert "3 desired | 3 updated | 3 total | 3 available" in described
    cm = await kubectl(
        "create",
        "-f",
        "-",
        stdin=yaml.safe_dump(
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"k": "v"}}
        ),
    )
    assert cm.out.strip() == "configmap/c created"
    await kubectl("delete", "deployment", "web")

    async def no_pods() -> bool:
        return (await kubectl("get", "pods", "-o", "name")).out.strip() == ""

    await eventually(no_pods, within=10, interval=0.1)


async def test_namespaces_with_kubectl(kubectl: Kubectl) -> None:
    await kubectl(
        "apply",
        "-f",
        "-",
        stdin=yaml.safe_dump(
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team"}}
        ),
    )
    await kubectl(
        "apply",
        "-n",
        "team",
        "-f",
        "-",
        stdin=yaml.safe_dump({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}}),
    )
    listed = json.loads((await kubectl("get", "cm", "-A", "-o", "json")).out)
    assert [(i["metadata"]["namespace"], i["metadata"]["name"]) for i in listed["items"]] == [
        ("team", "c")
    ]
    res = await kubectl("delete", "namespace", "team", "--timeout=20s")
    assert 'namespace "team" deleted' in res.out
    assert (await kubectl("get", "ns", "team", check=False)).rc != 0


async def test_imperative_create_of_namespace_configmap_and_secret(kubectl: Kubectl) -> None:
    """kubectl's generators send protobuf bodies for these kinds."""
    assert (await kubectl("create", "namespace", "team")).out.strip() == "namespace/team created"
    await kubectl(
        "create", "configmap", "c", "-n", "team", "--from-literal=a=1", "--from-literal=b=2"
    )
    await kubectl("create", "secret", "generic", "s", "-n", "team", "--from-literal=pw=hunter2")
    cm = await kubectl.json("get", "cm", "c", "-n", "team")
    assert cm["data"] == {"a": "1", "b": "2"}
    secret = await kubectl.json("get", "secret", "s", "-n", "team")
    assert secret["type"] == "Opaque"
    assert secret["data"] == {"pw": "aHVudGVyMg=="}
    ns = await kubectl.json("get", "ns", "team")
    assert "generateName" not in ns["metadata"]
    assert ns["status"]["phase"] == "Active"


async def test_delete_with_server_dry_run_keeps_the_object(kubectl: Kubectl) -> None:
    await kubectl("create", "namespace", "team")
    await kubectl("create", "configmap", "c", "-n", "team", "--from-literal=a=1")
    res = await kubectl("delete", "configmap", "c", "-n", "team", "--dry-run=server")
    assert res.out.strip() == 'configmap "c" deleted from team namespace (server dry run)'
    await kubectl("delete", "namespace", "team", "--dry-run=server")
    assert (await kubectl.json("get", "cm", "c", "-n", "team"))["data"] == {"a": "1"}
    assert (await kubectl.json("get", "ns", "team"))["status"]["phase"] == "Active"


async def test_cluster_info_and_the_kubernetes_service(kubectl: Kubectl, api: KubeAPI) -> None:
    info = await kubectl("cluster-info")
    assert f"Kubernetes control plane is running at {api.url}" in info.out
    row = (await kubectl("get", "svc", "kubernetes", "--no-headers")).out.split()
    assert row[:5] == ["kubernetes", "ClusterIP", "10.96.0.1", "<none>", "443/TCP"]
    svc = yaml.safe_dump(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "web"},
            "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]},
        }
    )
    await kubectl("apply", "-f", "-", stdin=svc)
    web = await kubectl.json("get", "svc", "web")
    assert web["spec"]["clusterIP"] not in ("", "10.96.0.1")
    assert web["spec"]["ports"] == [{"port": 80, "protocol": "TCP", "targetPort": 80}]


async def test_imperative_create_deployment_sends_protobuf_and_works(kubectl: Kubectl) -> None:
    res = await kubectl(
        "create", "deployment", "web", "--image=nginx:1.27", "--replicas=2", "--port=80"
    )
    assert res.out.strip() == "deployment.apps/web created"
    created = await kubectl.json("get", "deploy", "web")
    spec = created["spec"]
    assert spec["replicas"] == 2
    assert spec["selector"] == {"matchLabels": {"app": "web"}}
    assert spec["template"]["metadata"]["labels"] == {"app": "web"}
    [container] = spec["template"]["spec"]["containers"]
    assert (container["name"], container["image"]) == ("nginx", "nginx:1.27")
    assert container["ports"] == [{"containerPort": 80, "protocol": "TCP"}]
    await kubectl("rollout", "status", "deploy/web", "--timeout=20s")
    await kubectl("create", "deployment", "idle", "--image=nginx:1.27", "--replicas=0")
    assert (await kubectl.json("get", "deploy", "idle"))["spec"]["replicas"] == 0


async def test_explain_reads_kubes_schemas_of_builtin_kinds(kubectl: Kubectl) -> None:
    pod = (await kubectl("explain", "pod.spec.containers.name")).out
    assert "KIND:       Pod" in pod
    assert "FIELD: name <string>" in pod
    assert "Name of the container specified as a DNS_LABEL." in pod
    replicas = (await kubectl("explain", "deployment.spec.replicas")).out
    assert "GROUP:      apps" in replicas
    assert "FIELD: replicas <integer>" in replicas
    secret = (await kubectl("explain", "secret", "--recursive")).out
    assert "stringData\t<map[string]string>" in secret


async def test_server_side_apply_takes_over_from_client_side_apply(kubectl: Kubectl) -> None:
    await install_crd(kubectl)
    await kubectl("apply", "-f", "-", stdin=WIDGET_YAML)
    # kube's CSA -> SSA upgrade: fields recorded in last-applied and unchanged since are
    # kubectl's to change, although kubectl-client-side-apply owns them
    upgraded = await kubectl(
        "apply", "--server-side", "-f", "-", stdin=WIDGET_YAML.replace("size: 3", "size: 4")
    )
    assert upgraded.out.strip() == "widget.example.com/w1 serverside-applied"
    obj = await kubectl.json("get", "widget", "w1", "--show-managed-fields")
    assert obj["spec"]["size"] == 4
    owners = {m["manager"]: m["fieldsV1"] for m in obj["metadata"]["managedFields"]}
    assert "f:size" in owners["kubectl"]["f:spec"]
    assert "f:size" not in owners.get("kubectl-client-side-apply", {}).get("f:spec", {})
    last = json.loads(obj["metadata"]["annotations"][LAST_APPLIED])
    assert last["spec"] == {"size": 4, "tags": ["a"]}
    # a field someone else changed since the last apply is not taken over
    await kubectl("apply", "-f", "-", stdin=WIDGET_YAML.replace("tags: [a]", "tags: [b]"))
    await kubectl(
        "patch",
        "widget",
        "w1",
        "--type=merge",
        "-p",
        '{"spec":{"tags":["c"]}}',
        "--field-manager=other",
    )
    conflict = await kubectl(
        "apply",
        "--server-side",
        "-f",
        "-",
        stdin=WIDGET_YAML.replace("tags: [a]", "tags: [d]"),
        check=False,
    )
    assert conflict.rc != 0
    assert 'conflict with "other"' in conflict.err
    assert "kubectl-client-side-apply" not in conflict.err
