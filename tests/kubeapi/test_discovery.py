"""Discovery and OpenAPI documents, as kubectl and the dynamic client read them."""

from __future__ import annotations

import aiohttp
from kubernetes_asyncio import client
from kubernetes_asyncio.client.api_client import ApiClient

AGG = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json"


async def test_version(http: aiohttp.ClientSession) -> None:
    async with http.get("/version") as resp:
        v = await resp.json()
    assert v["major"] == "1"
    assert v["gitVersion"].startswith("v1.")


async def test_legacy_discovery(http: aiohttp.ClientSession) -> None:
    async with http.get("/api") as resp:
        assert (await resp.json())["versions"] == ["v1"]
    async with http.get("/api/v1") as resp:
        doc = await resp.json()
    names = {r["name"] for r in doc["resources"]}
    assert {"namespaces", "pods", "pods/status", "secrets", "configmaps", "events"} <= names
    async with http.get("/apis") as resp:
        groups = {g["name"] for g in (await resp.json())["groups"]}
    assert {"apps", "coordination.k8s.io", "apiextensions.k8s.io"} <= groups
    async with http.get("/apis/apps/v1") as resp:
        apps = {r["name"]: r for r in (await resp.json())["resources"]}
    assert apps["deployments"]["shortNames"] == ["deploy"]
    assert "deployments/scale" in apps


async def test_aggregated_discovery_when_asked(http: aiohttp.ClientSession) -> None:
    async with http.get("/apis", headers={"Accept": AGG}) as resp:
        assert resp.headers["Content-Type"].startswith(
            "application/json;g=apidiscovery.k8s.io;v=v2"
        )
        doc = await resp.json()
    assert doc["kind"] == "APIGroupDiscoveryList"
    apps = next(i for i in doc["items"] if i["metadata"]["name"] == "apps")
    deploy = next(r for r in apps["versions"][0]["resources"] if r["resource"] == "deployments")
    assert deploy["scope"] == "Namespaced"
    assert {s["subresource"] for s in deploy["subresources"]} == {"status", "scale"}


async def test_openapi_v3_lists_every_group_version_and_custom_schemas(
    widgets: client.CustomObjectsApi, http: aiohttp.ClientSession
) -> None:
    async with http.get("/openapi/v3") as resp:
        paths = (await resp.json())["paths"]
    assert {"api/v1", "apis/apps/v1", "apis/example.com/v1", "apis/example.com/v1beta1"} <= set(
        paths
    )
    async with http.get(paths["apis/example.com/v1"]["serverRelativeURL"]) as resp:
        doc = await resp.json()
    schema = doc["components"]["schemas"]["com.example.v1.Widget"]
    assert schema["x-kubernetes-group-version-kind"] == [
        {"group": "example.com", "version": "v1", "kind": "Widget"}
    ]
    assert schema["properties"]["spec"]["required"] == ["size"]
    patch = doc["paths"]["/apis/example.com/v1/namespaces/{namespace}/widgets/{name}"]["patch"]
    assert any(p["name"] == "fieldValidation" for p in patch["parameters"])
    assert "application/strategic-merge-patch+json" not in patch["requestBody"]["content"]


async def test_unknown_paths_are_404_status(http: aiohttp.ClientSession, k8s: ApiClient) -> None:
    for path in (
        "/apis/nope.example.com/v1/things",
        "/api/v2/pods",
        "/api/v1/namespaces/default/nothings",
    ):
        async with http.get(path) as resp:
            assert resp.status == 404
            assert (await resp.json())["kind"] == "Status"


async def test_health_endpoints_list_their_checks_when_verbose(
    http: aiohttp.ClientSession,
) -> None:
    async with http.get("/readyz") as resp:
        assert await resp.text() == "ok"
    async with http.get("/readyz", params={"verbose": ""}) as resp:
        lines = (await resp.text()).splitlines()
    assert lines[0] == "[+]ping ok"
    assert "[+]etcd ok" in lines
    assert "[+]shutdown ok" in lines
    assert lines[-1] == "readyz check passed"
    async with http.get("/livez?verbose&exclude=etcd") as resp:
        lines = (await resp.text()).splitlines()
    assert "[+]etcd excluded: ok" in lines
    assert lines[-1] == "livez check passed"
    async with http.get("/readyz/ping") as resp:
        assert (resp.status, await resp.text()) == (200, "ok")
    async with http.get("/readyz/nothing") as resp:
        assert resp.status == 404
