"""Lists: label selectors (every operator), field selectors, limit/continue at one snapshot."""

from __future__ import annotations

import json

import pytest
from kubernetes_asyncio import client
from kubernetes_asyncio.client.api_client import ApiClient

from devstack.kubeapi import KubeAPI

LABELS = {
    "a": {"env": "prod", "tier": "web"},
    "b": {"env": "dev", "tier": "web"},
    "c": {"env": "prod"},
    "d": {},
}


@pytest.fixture
async def labelled(k8s: ApiClient) -> client.CoreV1Api:
    v1 = client.CoreV1Api(k8s)
    for name, labels in LABELS.items():
        await v1.create_namespaced_config_map(
            "default", {"metadata": {"name": name, "labels": labels}}
        )
    return v1


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        pytest.param("env=prod", ["a", "c"], id="equals"),
        pytest.param("env==prod", ["a", "c"], id="double equals"),
        pytest.param("env!=prod", ["b", "d"], id="not equals includes objects without the key"),
        pytest.param("env in (dev, prod),tier", ["a", "b"], id="in and exists"),
        pytest.param("env notin (prod)", ["b", "d"], id="notin"),
        pytest.param("tier", ["a", "b"], id="exists"),
        pytest.param("!tier", ["c", "d"], id="does not exist"),
        pytest.param("env=prod,!tier", ["c"], id="conjunction"),
    ],
)
async def test_label_selector(
    labelled: client.CoreV1Api, selector: str, expected: list[str]
) -> None:
    got = await labelled.list_namespaced_config_map("default", label_selector=selector)
    assert [i.metadata.name for i in got.items] == expected


async def test_an_unparseable_label_selector_is_400(labelled: client.CoreV1Api) -> None:
    with pytest.raises(client.ApiException) as err:
        await labelled.list_namespaced_config_map("default", label_selector="env in prod")
    assert err.value.status == 400
    assert json.loads(err.value.body)["reason"] == "BadRequest"


async def test_field_selectors_on_name_and_namespace(labelled: client.CoreV1Api) -> None:
    got = await labelled.list_config_map_for_all_namespaces(
        field_selector="metadata.name!=a,metadata.namespace=default"
    )
    assert [i.metadata.name for i in got.items] == ["b", "c", "d"]
    got = await labelled.list_namespaced_config_map("default", field_selector="metadata.name=c")
    assert [i.metadata.name for i in got.items] == ["c"]


async def test_an_unsupported_field_selector_is_400(labelled: client.CoreV1Api) -> None:
    with pytest.raises(client.ApiException) as err:
        await labelled.list_namespaced_config_map("default", field_selector="data.k=v")
    assert err.value.status == 400
    assert json.loads(err.value.body)["message"] == "field label not supported: data.k"


async def test_pod_field_selectors_on_status_phase(k8s: ApiClient, api: KubeAPI) -> None:
    v1 = client.CoreV1Api(k8s)
    await v1.create_namespaced_pod(
        "default",
        {"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}},
    )
    from .conftest import eventually

    async def running() -> list[str]:
        got = await v1.list_namespaced_pod("default", field_selector="status.phase=Running")
        return [p.metadata.name for p in got.items]

    assert await eventually(running) == ["p"]


async def test_limit_and_continue_page_through_one_snapshot(labelled: client.CoreV1Api) -> None:
    first = await labelled.list_namespaced_config_map("default", limit=2)
    assert [i.metadata.name for i in first.items] == ["a", "b"]
    assert first.metadata._continue
    assert first.metadata.remaining_item_count == 2
    # changes after the first page are not seen by the rest of the paginated list
    await labelled.delete_namespaced_config_map("c", "default")
    await labelled.create_namespaced_config_map("default", {"metadata": {"name": "bb"}})
    await labelled.patch_namespaced_config_map("d", "default", {"data": {"new": "1"}})
    second = await labelled.list_namespaced_config_map(
        "default", limit=2, _continue=first.metadata._continue
    )
    assert [i.metadata.name for i in second.items] == ["c", "d"]
    assert second.items[1].data is None
    assert second.metadata.resource_version == first.metadata.resource_version
    assert not second.metadata._continue
    fresh = await labelled.list_namespaced_config_map("default")
    assert [i.metadata.name for i in fresh.items] == ["a", "b", "bb", "d"]


async def test_continue_after_compaction_is_410(api: KubeAPI, labelled: client.CoreV1Api) -> None:
    first = await labelled.list_namespaced_config_map("default", limit=1)
    await labelled.create_namespaced_config_map("default", {"metadata": {"name": "z"}})
    api.faults.compact()
    with pytest.raises(client.ApiException) as err:
        await labelled.list_namespaced_config_map(
            "default", limit=1, _continue=first.metadata._continue
        )
    assert err.value.status == 410
    assert json.loads(err.value.body)["reason"] == "Expired"


async def test_list_items_of_builtins_omit_kind_but_custom_resources_carry_it(
    k8s: ApiClient, widgets: client.CustomObjectsApi, labelled: client.CoreV1Api
) -> None:
    raw = await labelled.list_namespaced_config_map("default", _preload_content=False)
    body = json.loads(await raw.read())
    assert body["kind"] == "ConfigMapList"
    assert "kind" not in body["items"][0]
    from .conftest import widget

    await widgets.create_namespaced_custom_object(
        "example.com", "v1", "default", "widgets", widget("w")
    )
    listed = await widgets.list_namespaced_custom_object("example.com", "v1", "default", "widgets")
    assert listed["kind"] == "WidgetList"
    assert listed["items"][0]["kind"] == "Widget"


async def test_list_at_an_exact_resource_version(labelled: client.CoreV1Api) -> None:
    rv = (await labelled.list_namespaced_config_map("default")).metadata.resource_version
    await labelled.delete_namespaced_config_map("a", "default")
    then = await labelled.list_namespaced_config_map(
        "default", resource_version=rv, resource_version_match="Exact"
    )
    assert [i.metadata.name for i in then.items] == ["a", "b", "c", "d"]
    assert then.metadata.resource_version == rv


async def test_delete_collection_with_a_label_selector_answers_the_deleted_objects(
    labelled: client.CoreV1Api,
) -> None:
    raw = await labelled.delete_collection_namespaced_config_map(
        "default", label_selector="env=prod", _preload_content=False
    )
    answered = json.loads(await raw.read())
    assert answered["kind"] == "ConfigMapList"
    assert [i["metadata"]["name"] for i in answered["items"]] == ["a", "c"]
    left = await labelled.list_namespaced_config_map("default")
    assert [i.metadata.name for i in left.items] == ["b", "d"]


async def test_legacy_watch_path_prefix(api: KubeAPI, labelled: client.CoreV1Api) -> None:
    import aiohttp

    async with (
        aiohttp.ClientSession(base_url=api.url) as http,
        http.get(
            "/api/v1/watch/namespaces/default/configmaps", params={"timeoutSeconds": "1"}
        ) as resp,
    ):
        events = [json.loads(line) async for line in resp.content if line.strip()]
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [
        ("ADDED", n) for n in ("a", "b", "c", "d")
    ]
