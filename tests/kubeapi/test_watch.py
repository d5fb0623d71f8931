"""Watches through kubernetes-asyncio: replay from a resourceVersion, initial ADDED events,
bookmarks, timeoutSeconds, 410 Expired after compaction (and the relist that recovers),
selector enter/leave, and streams that survive the server closing them."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import pytest
from kubernetes_asyncio import client, watch
from kubernetes_asyncio.client.api_client import ApiClient

from devstack.kubeapi import KubeAPI


async def collect(w: watch.Watch, stream: Any, n: int, within: float = 5.0) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []

    async def run() -> None:
        async for ev in stream:
            out.append(ev)
            if len(out) >= n:
                w.stop()
                return

    await asyncio.wait_for(run(), within)
    return out


async def drain(v1: client.CoreV1Api, rv: str) -> list[dict[str, Any]]:
    async with watch.Watch() as w:
        return [
            ev
            async for ev in w.stream(
                v1.list_namespaced_config_map, "default", resource_version=rv, timeout_seconds=2
            )
        ]


def names(events: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(e["type"], e["raw_object"]["metadata"].get("name", "")) for e in events]


async def test_watch_without_resource_version_starts_with_added_for_every_object(
    k8s: ApiClient,
) -> None:
    v1 = client.CoreV1Api(k8s)
    for n in ("a", "b"):
        await v1.create_namespaced_config_map("default", {"metadata": {"name": n}})
    async with watch.Watch() as w:
        events = await collect(
            w, w.stream(v1.list_namespaced_config_map, "default", timeout_seconds=5), 2
        )
    assert names(events) == [("ADDED", "a"), ("ADDED", "b")]


async def test_watch_from_a_resource_version_replays_strictly_later_events(k8s: ApiClient) -> None:
    v1 = client.CoreV1Api(k8s)
    await v1.create_namespaced_config_map("default", {"metadata": {"name": "before"}})
    listed = await v1.list_namespaced_config_map("default")
    rv = listed.metadata.resource_version
    await v1.create_namespaced_config_map("default", {"metadata": {"name": "after"}})
    await v1.patch_namespaced_config_map("after", "default", {"data": {"k": "v"}})
    await v1.delete_namespaced_config_map("before", "default")
    async with watch.Watch() as w:
        events = await collect(
            w,
            w.stream(
                v1.list_namespaced_config_map, "default", resource_version=rv, timeout_seconds=5
            ),
            3,
        )
    assert names(events) == [("ADDED", "after"), ("MODIFIED", "after"), ("DELETED", "before")]
    rvs = [int(e["raw_object"]["metadata"]["resourceVersion"]) for e in events]
    assert rvs == sorted(rvs)
    assert rvs[0] > int(rv)


async def test_live_events_arrive_in_order(k8s: ApiClient) -> None:
    v1 = client.CoreV1Api(k8s)
    rv = (await v1.list_namespaced_config_map("default")).metadata.resource_version
    async with watch.Watch() as w:
        stream = w.stream(
            v1.list_namespaced_config_map, "default", resource_version=rv, timeout_seconds=5
        )
        task = asyncio.create_task(collect(w, stream, 3))
        await v1.create_namespaced_config_map("default", {"metadata": {"name": "x"}})
        await v1.patch_namespaced_config_map("x", "default", {"data": {"a": "1"}})
        await v1.delete_namespaced_config_map("x", "default")
        events = await task
    assert [e["type"] for e in events] == ["ADDED", "MODIFIED", "DELETED"]


async def test_bookmarks_only_when_asked_and_they_carry_the_latest_resource_version(
    k8s: ApiClient,
) -> None:
    v1 = client.CoreV1Api(k8s)
    await v1.create_namespaced_config_map("default", {"metadata": {"name": "a"}})
    rv = (await v1.list_namespaced_config_map("default")).metadata.resource_version
    await v1.create_namespaced_secret(
        "default", {"metadata": {"name": "unrelated"}}
    )  # bumps the global RV
    async with watch.Watch() as w:
        events = await collect(
            w,
            w.stream(
                v1.list_namespaced_config_map,
                "default",
                resource_version=rv,
                allow_watch_bookmarks=True,
                timeout_seconds=5,
            ),
            1,
        )
    assert events[0]["type"] == "BOOKMARK"
    assert int(events[0]["raw_object"]["metadata"]["resourceVersion"]) > int(rv)
    async with watch.Watch() as w:
        quiet = [
            ev
            async for ev in w.stream(
                v1.list_namespaced_config_map, "default", resource_version=rv, timeout_seconds=1
            )
        ]
    assert quiet == []  # no bookmarks without allowWatchBookmarks


async def test_timeout_seconds_ends_the_stream(k8s: ApiClient) -> None:
    v1 = client.CoreV1Api(k8s)
    rv = (await v1.list_namespaced_config_map("default")).metadata.resource_version
    loop = asyncio.get_running_loop()
    start = loop.time()
    async with watch.Watch() as w:
        events = [
            ev
            async for ev in w.stream(
                v1.list_namespaced_config_map, "default", resource_version=rv, timeout_seconds=1
            )
        ]
    assert events == []
    assert 0.9 <= loop.time() - start < 3


async def test_compaction_makes_old_resource_versions_410_expired(
    api: KubeAPI, k8s: ApiClient
) -> None:
    v1 = client.CoreV1Api(k8s)
    await v1.create_namespaced_config_map("default", {"metadata": {"name": "a"}})
    old_rv = (await v1.list_namespaced_config_map("default")).metadata.resource_version
    await v1.create_namespaced_config_map("default", {"metadata": {"name": "b"}})
    api.faults.compact()
    with pytest.raises(client.ApiException) as err:
        await drain(v1, old_rv)
    assert err.value.status == 410
    assert "Expired" in str(err.value.reason)
    assert "too old resource version" in str(err.value.reason)
    # the documented recovery: relist, then watch from the list's resourceVersion
    relisted = await v1.list_namespaced_config_map("default")
    assert sorted(i.metadata.name for i in relisted.items) == ["a", "b"]
    async with watch.Watch() as w:
        stream = w.stream(
            v1.list_namespaced_config_map,
            "default",
            resource_version=relisted.metadata.resource_version,
            timeout_seconds=5,
        )
        task = asyncio.create_task(collect(w, stream, 1))
        await v1.create_namespaced_config_map("default", {"metadata": {"name": "c"}})
        events = await task
    assert names(events) == [("ADDED", "c")]


async def test_410_arrives_as_an_error_event_in_a_200_stream(
    api: KubeAPI, http: aiohttp.ClientSession
) -> None:
    api.faults.compact()
    async with http.get(
        "/api/v1/namespaces/default/configmaps", params={"watch": "true", "resourceVersion": "1"}
    ) as resp:
        assert resp.status == 200
        lines = [json.loads(line) async for line in resp.content if line.strip()]
    assert lines[0]["type"] == "ERROR"
    assert lines[0]["object"]["code"] == 410
    assert lines[0]["object"]["reason"] == "Expired"
    assert lines[0]["object"]["kind"] == "Status"


async def test_watch_with_label_selector_sees_objects_enter_and_leave(k8s: ApiClient) -> None:
    v1 = client.CoreV1Api(k8s)
    await v1.create_namespaced_config_map(
        "default", {"metadata": {"name": "a", "labels": {"team": "blue"}}}
    )
    rv = (await v1.list_namespaced_config_map("default")).metadata.resource_version
    async with watch.Watch() as w:
        stream = w.stream(
            v1.list_namespaced_config_map,
            "default",
            label_selector="team=red",
            resource_version=rv,
            timeout_seconds=5,
        )
        task = asyncio.create_task(collect(w, stream, 2))
        await v1.create_namespaced_config_map(
            "default", {"metadata": {"name": "other", "labels": {"team": "blue"}}}
        )
        await v1.patch_namespaced_config_map(
            "a", "default", {"metadata": {"labels": {"team": "red"}}}
        )
        await v1.patch_namespaced_config_map(
            "a", "default", {"metadata": {"labels": {"team": "green"}}}
        )
        events = await task
    assert names(events) == [("ADDED", "a"), ("DELETED", "a")]
    # leaving the selection: the previous state at the new resourceVersion
    assert events[1]["raw_object"]["metadata"]["labels"] == {"team": "red"}
    assert int(events[1]["raw_object"]["metadata"]["resourceVersion"]) > int(
        events[0]["raw_object"]["metadata"]["resourceVersion"]
    )


async def test_watch_with_field_selector_on_name(k8s: ApiClient) -> None:
    v1 = client.CoreV1Api(k8s)
    rv = (await v1.list_namespaced_config_map("default")).metadata.resource_version
    async with watch.Watch() as w:
        stream = w.stream(
            v1.list_namespaced_config_map,
            "default",
            field_selector="metadata.name=b",
            resource_version=rv,
            timeout_seconds=5,
        )
        task = asyncio.create_task(collect(w, stream, 1))
        await v1.create_namespaced_config_map("default", {"metadata": {"name": "a"}})
        await v1.create_namespaced_config_map("default", {"metadata": {"name": "b"}})
        events = await task
    assert names(events) == [("ADDED", "b")]


async def test_watch_all_namespaces_and_one_namespace(k8s: ApiClient) -> None:
    v1 = client.CoreV1Api(k8s)
    await v1.create_namespace({"metadata": {"name": "other"}})
    rv = (await v1.list_config_map_for_all_namespaces()).metadata.resource_version
    await v1.create_namespaced_config_map("other", {"metadata": {"name": "x"}})
    await v1.create_namespaced_config_map("default", {"metadata": {"name": "y"}})
    async with watch.Watch() as w:
        everywhere = await collect(
            w,
            w.stream(v1.list_config_map_for_all_namespaces, resource_version=rv, timeout_seconds=5),
            2,
        )
    async with watch.Watch() as w:
        only_default = await collect(
            w,
            w.stream(
                v1.list_namespaced_config_map, "default", resource_version=rv, timeout_seconds=5
            ),
            1,
        )
    assert names(everywhere) == [("ADDED", "x"), ("ADDED", "y")]
    assert names(only_default) == [("ADDED", "y")]


async def test_a_watch_forever_survives_closed_streams_bookmarks_and_a_410(
    api: KubeAPI, k8s: ApiClient
) -> None:
    """kubernetes-asyncio's watch-forever mode resumes from the last RV it saw (bookmarks
    included) when the server ends the stream, and relists once on 410."""
    v1 = client.CoreV1Api(k8s)
    seen: list[tuple[str, str]] = []
    got = asyncio.Event()
    bookmarks = 0

    async def consume() -> None:
        nonlocal bookmarks
        async with watch.Watch() as w:
            async for ev in w.stream(
                v1.list_namespaced_config_map, "default", allow_watch_bookmarks=True
            ):
                if ev["type"] == "BOOKMARK":
                    bookmarks += 1
                else:
                    seen.append((ev["type"], ev["raw_object"]["metadata"]["name"]))
                got.set()

    task = asyncio.create_task(consume())
    try:
        await v1.create_namespaced_config_map("default", {"metadata": {"name": "one"}})

        async def until(pred: Any) -> None:
            async with asyncio.timeout(5):
                while not pred():
                    got.clear()
                    await got.wait()

        await until(lambda: ("ADDED", "one") in seen)
        await until(lambda: bookmarks >= 1)
        assert api.faults.close_watches() == 1
        await v1.create_namespaced_config_map("default", {"metadata": {"name": "two"}})
        await until(lambda: ("ADDED", "two") in seen)
        assert seen.count(("ADDED", "one")) == 1  # resumed from its RV, no replay
        api.faults.compact()
        api.faults.close_watches()
        await v1.create_namespaced_config_map("default", {"metadata": {"name": "three"}})
        await until(lambda: ("ADDED", "three") in seen)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_send_initial_events_ends_with_an_annotated_bookmark(
    k8s: ApiClient, http: aiohttp.ClientSession
) -> None:
    await client.CoreV1Api(k8s).create_namespaced_config_map("default", {"metadata": {"name": "a"}})
    params = {
        "watch": "1",
        "sendInitialEvents": "true",
        "resourceVersionMatch": "NotOlderThan",
        "allowWatchBookmarks": "true",
        "timeoutSeconds": "1",
    }
    async with http.get("/api/v1/namespaces/default/configmaps", params=params) as resp:
        lines = [json.loads(line) async for line in resp.content if line.strip()]
    assert lines[0]["type"] == "ADDED"
    assert lines[1]["type"] == "BOOKMARK"
    assert lines[1]["object"]["metadata"]["annotations"] == {"k8s.io/initial-events-end": "true"}
