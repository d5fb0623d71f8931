"""PATCH: JSON merge, JSON patch, strategic merge (built-ins only) and server-side apply."""

from __future__ import annotations

import json

import pytest
from kubernetes_asyncio import client
from kubernetes_asyncio.client.api_client import ApiClient

from .conftest import deployment, widget

MERGE = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
SMP = "application/strategic-merge-patch+json"
APPLY = "application/apply-patch+yaml"
W = ("example.com", "v1", "default", "widgets")


async def test_merge_patch_merges_maps_and_null_deletes(k8s: ApiClient) -> None:
    v1 = client.CoreV1Api(k8s)
    await v1.create_namespaced_config_map(
        "default", {"metadata": {"name": "a"}, "data": {"keep": "1", "drop": "2"}}
    )
    out = await v1.patch_namespaced_config_map(
        "a", "default", {"data": {"drop": None, "new": "3"}}, _content_type=MERGE
    )
    assert out.data == {"keep": "1", "new": "3"}


async def test_json_patch_ops_and_failed_test_op_is_422(k8s: ApiClient) -> None:
    v1 = client.CoreV1Api(k8s)
    await v1.create_namespaced_config_map(
        "default", {"metadata": {"name": "a"}, "data": {"k": "v"}}
    )
    out = await v1.patch_namespaced_config_map(
        "a",
        "default",
        [{"op": "add", "path": "/data/x", "value": "y"}, {"op": "remove", "path": "/data/k"}],
        _content_type=JSON_PATCH,
    )
    assert out.data == {"x": "y"}
    with pytest.raises(client.ApiException) as err:
        await v1.patch_namespaced_config_map(
            "a",
            "default",
            [{"op": "test", "path": "/data/x", "value": "nope"}],
            _content_type=JSON_PATCH,
        )
    assert err.value.status == 422


async def test_strategic_merge_patch_merges_containers_and_env_by_name(k8s: ApiClient) -> None:
    apps = client.AppsV1Api(k8s)
    d = deployment("web")
    d["spec"]["template"]["spec"]["containers"] = [
        {
            "name": "main",
            "image": "nginx:1",
            "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
        },
        {"name": "sidecar", "image": "envoy:1"},
    ]
    await apps.create_namespaced_deployment("default", d)
    patch = {
        "spec": {
            "template": {
                "spec": {
                    "containers": [
                        {
                            "name": "main",
                            "image": "nginx:2",
                            "env": [
                                {"name": "B", "value": "20"},
                                {"name": "A", "$patch": "delete"},
                            ],
                        }
                    ]
                }
            }
        }
    }
    out = await apps.patch_namespaced_deployment("web", "default", patch, _content_type=SMP)
    containers = out.spec.template.spec.containers
    assert [(c.name, c.image) for c in containers] == [("main", "nginx:2"), ("sidecar", "envoy:1")]
    assert [(e.name, e.value) for e in containers[0].env] == [("B", "20")]
    assert out.metadata.generation == 2


async def test_strategic_merge_patch_on_a_custom_resource_is_415(
    widgets: client.CustomObjectsApi,
) -> None:
    await widgets.create_namespaced_custom_object(*W, widget("w"))
    with pytest.raises(client.ApiException) as err:
        await widgets.patch_namespaced_custom_object(
            *W, "w", {"spec": {"size": 2}}, _content_type=SMP
        )
    assert err.value.status == 415
    assert json.loads(err.value.body)["reason"] == "UnsupportedMediaType"


async def test_json_patch_is_the_client_default_for_custom_objects_and_a_dict_body_is_rejected(
    widgets: client.CustomObjectsApi,
) -> None:
    """CustomObjectsApi sends a dict as json-patch+json by default; kube-apiserver rejects it."""
    await widgets.create_namespaced_custom_object(*W, widget("w"))
    with pytest.raises(client.ApiException) as err:
        await widgets.patch_namespaced_custom_object(*W, "w", {"spec": {"size": 2}})
    assert err.value.status == 400


async def test_server_side_apply_creates_updates_and_removes_fields_it_no_longer_applies(
    widgets: client.CustomObjectsApi,
) -> None:
    body = widget("w", 3, name="abc", tags=["x"])
    _, code, _ = await widgets.patch_namespaced_custom_object_with_http_info(
        *W, "w", body, field_manager="alice", _content_type=APPLY
    )
    assert code == 201  # apply creates (kubernetes-asyncio returns None for a 201 to a PATCH)
    created = await widgets.get_namespaced_custom_object(*W, "w")
    assert created["spec"] == {"size": 3, "name": "abc", "tags": ["x"], "color": "blue"}
    managers = {(m["manager"], m["operation"]) for m in created["metadata"]["managedFields"]}
    assert managers == {("alice", "Apply")}
    updated = await widgets.patch_namespaced_custom_object(
        *W, "w", widget("w", 4), field_manager="alice", _content_type=APPLY
    )
    assert updated["spec"] == {
        "size": 4,
        "color": "blue",
    }  # name and tags were alice's and she dropped them
    assert updated["metadata"]["generation"] == 2


async def test_server_side_apply_of_an_empty_map_removes_the_managers_keys(
    k8s: ApiClient,
) -> None:
    v1 = client.CoreV1Api(k8s)

    async def apply(labels: dict[str, str]) -> dict[str, str] | None:
        cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "labels": labels}}
        await v1.patch_namespaced_config_map_with_http_info(
            "c", "default", cm, field_manager="alice", _content_type=APPLY
        )
        return (await v1.read_namespaced_config_map("c", "default")).metadata.labels

    assert await apply({"a": "1", "b": "2"}) == {"a": "1", "b": "2"}
    assert not await apply({})
    assert await apply({"c": "3"}) == {"c": "3"}


async def test_server_side_apply_conflicts_with_another_manager_unless_forced(
    widgets: client.CustomObjectsApi,
) -> None:
    await widgets.patch_namespaced_custom_object(
        *W, "w", widget("w", 3), field_manager="alice", _content_type=APPLY
    )
    same_value = await widgets.patch_namespaced_custom_object(
        *W, "w", widget("w", 3), field_manager="bob", _content_type=APPLY
    )
    assert same_value["spec"]["size"] == 3  # agreeing on a value is shared ownership, no conflict
    with pytest.raises(client.ApiException) as err:
        await widgets.patch_namespaced_custom_object(
            *W, "w", widget("w", 5), field_manager="carol", _content_type=APPLY
        )
    st = json.loads(err.value.body)
    assert err.value.status == 409
    assert st["reason"] == "Conflict"
    assert {c["field"] for c in st["details"]["causes"]} == {".spec.size"}
    assert st["message"].startswith("Apply failed with 2 conflicts")
    forced = await widgets.patch_namespaced_custom_object(
        *W, "w", widget("w", 5), field_manager="carol", force=True, _content_type=APPLY
    )
    assert forced["spec"]["size"] == 5


async def test_server_side_apply_without_field_manager_is_400(
    widgets: client.CustomObjectsApi,
) -> None:
    with pytest.raises(client.ApiException) as err:
        await widgets.patch_namespaced_custom_object(*W, "w", widget("w"), _content_type=APPLY)
    assert err.value.status == 400


async def test_server_side_apply_of_status(widgets: client.CustomObjectsApi) -> None:
    await widgets.create_namespaced_custom_object(*W, widget("w"))
    out = await widgets.patch_namespaced_custom_object_status(
        *W,
        "w",
        {
            "apiVersion": "example.com/v1",
            "kind": "Widget",
            "metadata": {"name": "w"},
            "status": {"phase": "Ready"},
        },
        field_manager="ctrl",
        _content_type=APPLY,
    )
    assert out["status"] == {"phase": "Ready"}
    assert out["metadata"]["generation"] == 1
