"""Fault injection from Python and over the admin endpoint."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest
from kubernetes_asyncio import client, watch
from kubernetes_asyncio.client.api_client import ApiClient

from devstack.kubeapi import KubeAPI

from .conftest import eventually


async def test_fail_next_answers_500_status_then_recovers(api: KubeAPI, k8s: ApiClient) -> None:
    v1 = client.CoreV1Api(k8s)
    api.faults.fail_next(2)
    for _ in range(2):
        with pytest.raises(client.ApiException) as err:
            await v1.list_namespace()
        st = json.loads(err.value.body)
        assert err.value.status == 500
        assert st["reason"] == "InternalError"
        assert st["kind"] == "Status"
    assert (await v1.list_namespace()).items


async def test_fail_next_429_carries_retry_after(api: KubeAPI, http: aiohttp.ClientSession) -> None:
    api.faults.fail_next(1, status=429, retry_after=7)
    async with http.get("/api/v1/namespaces") as resp:
        assert resp.status == 429
        assert resp.headers["Retry-After"] == "7"
        st = await resp.json()
    assert st["reason"] == "TooManyRequests"
    assert st["details"]["retryAfterSeconds"] == 7
    async with http.get("/api/v1/namespaces") as resp:
        assert resp.status == 200


async def test_fail_next_only_matching_paths(api: KubeAPI, k8s: ApiClient) -> None:
    v1 = client.CoreV1Api(k8s)
    api.faults.fail_next(1, path_contains="/secrets")
    await v1.list_namespaced_config_map("default")  # not matching: unaffected
    with pytest.raises(client.ApiException) as err:
        await v1.list_namespaced_secret("default")
    assert err.value.status == 500
    await v1.list_namespaced_secret("default")


async def test_latency_is_added_to_every_request(api: KubeAPI, k8s: ApiClient) -> None:
    v1 = client.CoreV1Api(k8s)
    loop = asyncio.get_running_loop()
    api.faults.set_latency(0.5)
    start = loop.time()
    await v1.list_namespace()
    assert loop.time() - start >= 0.5
    api.faults.clear()
    start = loop.time()
    await v1.list_namespace()
    assert loop.time() - start < 0.5


async def test_close_watches_ends_open_streams(api: KubeAPI, k8s: ApiClient) -> None:
    v1 = client.CoreV1Api(k8s)
    rv = (await v1.list_namespaced_config_map("default")).metadata.resource_version
    async with watch.Watch() as w:

        async def drain() -> list[object]:
            return [
                ev
                async for ev in w.stream(
                    v1.list_namespaced_config_map,
                    "default",
                    resource_version=rv,
                    timeout_seconds=30,
                )
            ]

        task = asyncio.create_task(drain())

        async def opened() -> bool:
            return bool(api.store.watchers)

        await eventually(opened)
        assert api.faults.close_watches() == 1
        assert await asyncio.wait_for(task, 5) == []


async def test_admin_endpoint_drives_the_same_faults(
    api: KubeAPI, http: aiohttp.ClientSession
) -> None:
    async with http.post(
        "/_emulator/faults/fail-next", json={"n": 1, "status": 429, "retry_after": 3}
    ) as resp:
        assert resp.status == 200
    async with http.get("/api/v1/namespaces") as resp:
        assert resp.status == 429
        assert resp.headers["Retry-After"] == "3"
    async with http.get("/api/v1/namespaces") as resp:
        rv = (await resp.json())["metadata"]["resourceVersion"]
    async with http.post(
        "/api/v1/namespaces/default/configmaps", json={"metadata": {"name": "a"}}
    ) as resp:
        assert resp.status == 201
    async with http.post("/_emulator/faults/compact") as resp:
        assert resp.status == 200
    async with http.get(
        "/api/v1/namespaces/default/configmaps", params={"watch": "1", "resourceVersion": rv}
    ) as resp:
        first = json.loads(await resp.content.readline())
    assert first["type"] == "ERROR"
    assert first["object"]["code"] == 410
    async with http.post("/_emulator/faults/latency", json={"seconds": 0.05}) as resp:
        assert resp.status == 200
    assert api.faults.latency == 0.05
    async with http.post("/_emulator/faults/clear") as resp:
        assert resp.status == 200
    assert api.faults.latency == 0

    async def watch_then_close() -> list[bytes]:
        async with http.get(
            "/api/v1/namespaces/default/configmaps", params={"watch": "1", "resourceVersion": "0"}
        ) as resp:
            return [line async for line in resp.content]

    task = asyncio.create_task(watch_then_close())

    async def opened() -> bool:
        return bool(api.store.watchers)

    await eventually(opened)
    async with http.post("/_emulator/faults/close-watches") as resp:
        assert (await resp.json()) == {"closed": 1}
    lines = await asyncio.wait_for(task, 5)
    assert len(lines) == 1
    assert json.loads(lines[0])["type"] == "ADDED"
