"""The informer converges on the server's state whatever happens to its watches.

Every test ends with the same check: the informer's cache *and* the state rebuilt from the
events its handlers were given both equal a fresh list from the server (names and
resourceVersions), so a missed ADDED, MODIFIED or DELETED anywhere would fail it.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator
from typing import Any

import pytest

from devstack.kubeapi import KubeAPI
from k8s.harness import TcpProxy, config_map, eventually
from shared.api.meta import ObjectKey
from shared.k8s.backoff import BackoffPolicy
from shared.k8s.client import KubeClient
from shared.k8s.informer import EventType, Informer, InformerEvent, InformerSettings
from shared.k8s.resources import CONFIG_MAPS, NAMESPACES, Resource

FAST = InformerSettings(
    page_size=50,
    watch_timeout_seconds=30,
    backoff=BackoffPolicy(base_seconds=0.02, factor=2, cap_seconds=0.2, jitter=0.5),
    min_healthy_watch_seconds=0.0,
)


class Mirror:
    """Rebuilds the object set purely from the informer's events."""

    def __init__(self) -> None:
        self.objects: dict[ObjectKey, str] = {}
        self.deleted: set[ObjectKey] = set()

    def __call__(self, event: InformerEvent) -> None:
        if event.type is EventType.DELETED:
            self.objects.pop(event.key, None)
            self.deleted.add(event.key)
        else:
            self.objects[event.key] = event.object["metadata"]["resourceVersion"]


async def server_state(
    client: KubeClient, resource: Resource, **selectors: Any
) -> dict[ObjectKey, str]:
    out: dict[ObjectKey, str] = {}
    token = None
    while True:
        page = await client.list(resource, continue_token=token, limit=500, **selectors)
        out.update({ObjectKey.of(o): o["metadata"]["resourceVersion"] for o in page.items})
        if not (token := page.continue_token):
            return out


def cache_state(informer: Informer) -> dict[ObjectKey, str]:
    return {ObjectKey.of(o): o["metadata"]["resourceVersion"] for o in informer.items()}


async def converged(
    client: KubeClient, informer: Informer, mirror: Mirror, **selectors: Any
) -> None:
    async def check() -> bool:
        truth = await server_state(client, informer.resource, **selectors)
        return cache_state(informer) == truth and mirror.objects == truth

    await eventually(check, within=30, message="the informer to converge on the server's state")


@contextlib.asynccontextmanager
async def running(informer: Informer) -> AsyncIterator[None]:
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(informer.run(), name="informer")
        try:
            async with asyncio.timeout(10):
                await informer.wait_synced()
            yield
        finally:
            task.cancel()


async def churn(client: KubeClient, namespace: str, *, writes: int, names: int, seed: int) -> None:
    """`writes` random creates, updates and deletes over `names` ConfigMaps."""
    rng = random.Random(seed)
    existing = {
        o["metadata"]["name"] for o in (await client.list(CONFIG_MAPS, namespace=namespace)).items
    }
    for i in range(writes):
        name = f"cm-{rng.randrange(names)}"
        if name not in existing:
            await client.create(CONFIG_MAPS, config_map(name, namespace, n=str(i)))
            existing.add(name)
        elif rng.random() < 0.25:
            await client.delete(CONFIG_MAPS, name, namespace=namespace)
            existing.discard(name)
        else:
            await client.patch_merge(
                CONFIG_MAPS, name, {"data": {"n": str(i)}}, namespace=namespace
            )


async def test_the_informer_lists_what_exists_then_follows_every_change(
    kube: KubeClient, namespace: str
) -> None:
    for i in range(3):
        await kube.create(CONFIG_MAPS, config_map(f"pre-{i}", namespace))
    informer = Informer(kube, CONFIG_MAPS, namespace=namespace, settings=FAST)
    mirror = Mirror()
    informer.add_handler(mirror)
    async with running(informer):
        assert len(informer) == 3
        await churn(kube, namespace, writes=60, names=10, seed=1)
        await converged(kube, informer, mirror, namespace=namespace)
    assert informer.stats.lists == 1, "no relist was needed"


async def test_the_informer_scopes_to_a_namespace_and_labels(
    kube: KubeClient, make_namespace: Any
) -> None:
    ours, other = await make_namespace(), await make_namespace()
    informer = Informer(
        kube, CONFIG_MAPS, namespace=ours, label_selector={"app": "x"}, settings=FAST
    )
    mirror = Mirror()
    informer.add_handler(mirror)
    async with running(informer):
        await kube.create(CONFIG_MAPS, config_map("match", ours, labels={"app": "x"}))
        await kube.create(CONFIG_MAPS, config_map("other-label", ours, labels={"app": "y"}))
        await kube.create(CONFIG_MAPS, config_map("match", other, labels={"app": "x"}))
        await eventually(lambda: ObjectKey(ours, "match") in mirror.objects, message="the match")
        await converged(kube, informer, mirror, namespace=ours, label_selector="app=x")
        assert set(mirror.objects) == {ObjectKey(ours, "match")}

        # Leaving the selection is a DELETED for the informer.
        await kube.patch_merge(
            CONFIG_MAPS, "match", {"metadata": {"labels": {"app": "z"}}}, namespace=ours
        )
        await eventually(lambda: ObjectKey(ours, "match") in mirror.deleted, message="the DELETED")
        assert informer.get(ObjectKey(ours, "match")) is None


async def test_the_namespace_index_follows_the_cache_through_creates_updates_and_deletes(
    kube: KubeClient, make_namespace: Any
) -> None:
    """`in_namespace` answers from an index, not a scan: it must hold exactly what the cache
    holds for that namespace after every kind of change (and after the first list)."""
    first, second = await make_namespace(), await make_namespace()
    await kube.create(CONFIG_MAPS, config_map("listed", first))
    informer = Informer(kube, CONFIG_MAPS, settings=FAST)
    mirror = Mirror()
    informer.add_handler(mirror)

    def indexed(namespace: str) -> set[ObjectKey]:
        return {ObjectKey.of(o) for o in informer.in_namespace(namespace)}

    def cached(namespace: str) -> set[ObjectKey]:
        return {ObjectKey.of(o) for o in informer.items() if ObjectKey.of(o).namespace == namespace}

    async with running(informer):
        assert indexed(first) == {ObjectKey(first, "listed")}
        await churn(kube, first, writes=40, names=8, seed=3)
        await churn(kube, second, writes=40, names=8, seed=4)
        await converged(kube, informer, mirror)
        for namespace in (first, second):
            assert indexed(namespace) == cached(namespace)
            assert all(
                o is informer.get(ObjectKey.of(o)) for o in informer.in_namespace(namespace)
            ), "the index holds the cached objects themselves, at their newest version"
        assert informer.in_namespace("no-such-namespace") == []


async def test_the_informer_converges_when_every_watch_is_closed_again_and_again(
    kube: KubeClient, kubeapi: Any, namespace: str
) -> None:
    informer = Informer(kube, CONFIG_MAPS, namespace=namespace, settings=FAST)
    mirror = Mirror()
    informer.add_handler(mirror)
    async with running(informer):
        for round_ in range(5):
            await churn(kube, namespace, writes=20, names=15, seed=round_)
            kubeapi.faults.close_watches()
        await converged(kube, informer, mirror, namespace=namespace)
    assert informer.stats.watches >= 5, "it re-watched after every close"
    assert informer.stats.lists == 1, "a closed watch resumes from its resourceVersion, no relist"


async def test_the_informer_relists_when_its_history_was_compacted(
    kube: KubeClient, kubeapi: Any, namespace: str
) -> None:
    informer = Informer(kube, CONFIG_MAPS, namespace=namespace, settings=FAST)
    mirror = Mirror()
    informer.add_handler(mirror)
    await churn(kube, namespace, writes=30, names=10, seed=7)
    async with running(informer):
        # Keep the informer from watching while we write and compact, then let it back in.
        kubeapi.faults.fail_next(1_000_000, status=500, path_contains="watch=true")
        kubeapi.faults.close_watches()
        await churn(kube, namespace, writes=100, names=10, seed=8)
        kubeapi.faults.compact()
        kubeapi.faults.clear()
        await converged(kube, informer, mirror, namespace=namespace)
    assert informer.stats.expired >= 1, "the old resourceVersion answered 410"
    assert informer.stats.lists >= 2, "and the informer relisted"
    assert mirror.deleted, "objects deleted while it was away were reported as DELETED"


async def test_the_informer_rides_out_a_burst_of_500s_and_429s(
    kube: KubeClient, kubeapi: Any, namespace: str
) -> None:
    informer = Informer(kube, CONFIG_MAPS, namespace=namespace, settings=FAST)
    mirror = Mirror()
    informer.add_handler(mirror)
    path = f"/namespaces/{namespace}/configmaps"
    kubeapi.faults.fail_next(4, status=500, path_contains=path)
    kubeapi.faults.fail_next(2, status=429, path_contains=path, retry_after=1)
    async with running(informer):
        kubeapi.faults.fail_next(3, status=503, path_contains="watch=true")
        kubeapi.faults.close_watches()
        await churn(kube, namespace, writes=40, names=10, seed=3)
        await converged(kube, informer, mirror, namespace=namespace)
    assert informer.stats.failures >= 9, "every injected failure was seen and retried"


async def test_the_informer_converges_after_thousands_of_writes_while_cut_off(
    kube: KubeClient, kubeapi: Any, namespace: str
) -> None:
    host, port = kubeapi.url.removeprefix("http://").rsplit(":", 1)
    async with TcpProxy(host, int(port)) as proxy:
        config = kubeapi.kubeconfig_dict()
        for cluster in config["clusters"]:
            cluster["cluster"]["server"] = proxy.url
        async with KubeClient.from_kubeconfig_dict(config) as cut_off:
            informer = Informer(cut_off, CONFIG_MAPS, namespace=namespace, settings=FAST)
            mirror = Mirror()
            informer.add_handler(mirror)
            await churn(kube, namespace, writes=50, names=40, seed=11)
            async with running(informer):
                proxy.partition()
                await churn(kube, namespace, writes=2000, names=40, seed=12)
                proxy.heal()
                await converged(kube, informer, mirror, namespace=namespace)
    assert informer.stats.failures >= 1, "it noticed the partition"
    assert informer.stats.lists == 1, "the history was still there: it resumed without a relist"


@pytest.mark.parametrize("page_size", [pytest.param(7, id="a list is read page by page")])
async def test_the_informer_pages_its_list(
    kube: KubeClient, namespace: str, page_size: int
) -> None:
    for i in range(30):
        await kube.create(CONFIG_MAPS, config_map(f"cm-{i}", namespace))
    settings = InformerSettings(page_size=page_size, backoff=FAST.backoff)
    informer = Informer(kube, CONFIG_MAPS, namespace=namespace, settings=settings)
    mirror = Mirror()
    informer.add_handler(mirror)
    async with running(informer):
        assert len(informer) == 30
        await converged(kube, informer, mirror, namespace=namespace)


async def test_a_failing_handler_does_not_blind_the_others(
    kube: KubeClient, namespace: str
) -> None:
    informer = Informer(kube, CONFIG_MAPS, namespace=namespace, settings=FAST)

    def broken(event: InformerEvent) -> None:
        raise RuntimeError("handler bug")

    mirror = Mirror()
    informer.add_handler(broken)
    informer.add_handler(mirror)
    async with running(informer):
        await kube.create(CONFIG_MAPS, config_map("cm", namespace))
        await converged(kube, informer, mirror, namespace=namespace)


async def test_bookmarks_keep_a_quiet_informer_ahead_of_compaction(make_namespace: Any) -> None:
    """Writes elsewhere move the global resourceVersion; bookmarks carry it to an informer whose
    own objects are quiet, so after a compaction it resumes its watch instead of relisting."""
    async with (
        KubeAPI(name="bookmarks", bookmark_interval=0.05) as api,
        KubeClient.from_kubeconfig_dict(api.kubeconfig_dict()) as client,
    ):
        quiet, busy = "quiet", "busy"
        for name in (quiet, busy):
            await client.create(
                NAMESPACES, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
            )
        informer = Informer(client, CONFIG_MAPS, namespace=quiet, settings=FAST)
        mirror = Mirror()
        informer.add_handler(mirror)
        async with running(informer):
            for i in range(20):
                await client.create(CONFIG_MAPS, config_map(f"cm-{i}", busy))
            current = (await client.list(CONFIG_MAPS, namespace=busy)).resource_version
            await eventually(
                lambda: informer.resource_version == current,
                message="a bookmark to carry the new resourceVersion",
            )
            api.faults.compact()
            api.faults.close_watches()
            await client.create(CONFIG_MAPS, config_map("after", quiet))
            await converged(client, informer, mirror, namespace=quiet)
        assert informer.stats.expired == 0, "the bookmarked resourceVersion was still in history"
        assert informer.stats.lists == 1


async def test_a_resync_announces_every_cached_object_again(
    kube: KubeClient, namespace: str
) -> None:
    for i in range(3):
        await kube.create(CONFIG_MAPS, config_map(f"cm-{i}", namespace))
    settings = InformerSettings(resync_seconds=0.05, backoff=FAST.backoff)
    informer = Informer(kube, CONFIG_MAPS, namespace=namespace, settings=settings)
    synced: set[ObjectKey] = set()

    def on_event(event: InformerEvent) -> None:
        if event.type is EventType.SYNC:
            synced.add(event.key)

    informer.add_handler(on_event)
    async with running(informer):
        await eventually(lambda: len(synced) == 3, message="a SYNC for every object")
