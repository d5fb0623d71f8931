"""An informer: list + watch one resource into a local cache, and tell handlers what changed.

The loop is client-go's reflector, in asyncio:

1. **List** (paged, `limit`/`continue`) and *replace* the cache with the result. The difference to
   the old cache is handed to the handlers as ADDED / MODIFIED / DELETED, so nothing that happened
   while we were not watching is lost: a relist after a long disconnection still reports every
   object that changed or vanished.
2. **Watch** from the list's resourceVersion, with bookmarks, applying each event to the cache and
   remembering the newest resourceVersion.
3. When the server ends the watch (its `timeoutSeconds`, or a restart), watch again from that
   resourceVersion: no relist.
4. **410 Gone** (the resourceVersion was compacted away): relist at once.
5. Any other failure (5xx, 429, connection refused, a dropped stream, 403 while RBAC settles): wait
   a capped, jittered, exponentially growing delay (and at least the server's Retry-After), then
   retry the same step. A success resets the delay.

Handlers are plain synchronous callables, called in order for every change; they must not block
(enqueueing a key is the intended use). A handler that raises is logged and the informer goes on.

One index beyond the primary key, by namespace (`in_namespace`): a fleet's management cluster
holds a namespace per cluster, and a scan of every cluster's objects per reconcile is quadratic.
Deliberately not done: shared informers (each controller owns its own; we have few), transforms,
and other indexers. Resync (re-announcing every cached object) is off by default:
the controllers requeue timed work themselves (`RequeueAfter`), see docs/k8s.md.
"""

from __future__ import annotations

import asyncio
import enum
import random
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import structlog

from shared.api.meta import Obj, ObjectKey, metadata
from shared.k8s.backoff import BackoffPolicy
from shared.k8s.client import KubeClient, WatchEvent
from shared.k8s.errors import Gone, KubeError
from shared.k8s.resources import Resource

__all__ = [
    "EventType",
    "Informer",
    "InformerEvent",
    "InformerSettings",
    "InformerStats",
    "cached_in",
    "status_only",
    "unless_status_only",
    "version_of",
]

log = structlog.get_logger(__name__)


class EventType(enum.StrEnum):
    """What a handler is told about one object."""

    ADDED = "ADDED"
    MODIFIED = "MODIFIED"
    DELETED = "DELETED"
    SYNC = "SYNC"
    """Periodic resync: the object did not change, it is announced again."""


@dataclass(frozen=True, slots=True)
class InformerEvent:
    """One change of the cache. `object` is the new state (for DELETED: the last known one)."""

    type: EventType
    key: ObjectKey
    object: Obj
    old: Obj | None = None


def status_only(event: InformerEvent) -> bool:
    """Whether `event` changed nothing but the object's status (and its resourceVersion and
    managedFields, which every write changes). Controllers whose decisions do not depend on the
    status, or that write it themselves, skip such events: their own status write would wake
    them again for a full pass."""
    return (
        event.type is EventType.MODIFIED
        and event.old is not None
        and _without_status(event.old) == _without_status(event.object)
    )


def unless_status_only(event: InformerEvent) -> list[ObjectKey]:
    """A controller's `map_to`: the object's own key, except for a change of nothing but its
    status (see `status_only`). Adds, deletes, and spec, label or annotation changes count."""
    return [] if status_only(event) else [event.key]


def _without_status(obj: Mapping[str, Any]) -> dict[str, Any]:
    meta = {k: v for k, v in metadata(obj).items() if k not in {"resourceVersion", "managedFields"}}
    return {**{k: v for k, v in obj.items() if k != "status"}, "metadata": meta}


@dataclass(frozen=True, slots=True)
class InformerSettings:
    """Paging, watch length, and failure backoff of one informer."""

    page_size: int = 500
    """Objects per list page (`limit`). 500, client-go's default page size for informers."""

    watch_timeout_seconds: int = 300
    """Server-side `timeoutSeconds` of a watch is drawn uniformly from [this, 2 x this), in
    seconds. Five minutes, the reflector's minimum: long watches are cheap, and the spread keeps a
    fleet of informers from reconnecting in step."""

    backoff: BackoffPolicy = field(
        default_factory=lambda: BackoffPolicy(
            base_seconds=0.8, factor=2.0, cap_seconds=30.0, jitter=0.5
        )
    )
    """Delay before retrying a failed list or watch: 0.8 s doubling to 30 s with 50% jitter,
    the reflector's own backoff (800 ms initial, 30 s max, jitter 1.0 in wait.Jitter terms)."""

    min_healthy_watch_seconds: float = 1.0
    """A watch that ends *cleanly* with no event within this many seconds counts as a failure
    for backoff purposes, so a server that closes watches at once is not hammered in a tight
    loop (the reflector's "very short watch" check)."""

    resync_seconds: float | None = None
    """Re-announce every cached object as SYNC this often, in seconds; None disables. Off: our
    reconcilers schedule their own timed work, and a relist already repairs any drift."""


@dataclass(slots=True)
class InformerStats:
    """Counters, for tests and metrics: how often each recovery path ran."""

    lists: int = 0
    watches: int = 0
    expired: int = 0
    failures: int = 0
    events: int = 0


Handler = Callable[[InformerEvent], None]


class Informer:
    """List + watch `resource` (optionally one namespace, optionally label/field-selected)."""

    def __init__(
        self,
        client: KubeClient,
        resource: Resource,
        *,
        namespace: str | None = None,
        label_selector: str | Mapping[str, str] | None = None,
        field_selector: str | None = None,
        settings: InformerSettings | None = None,
        rand: Callable[[], float] = random.random,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self._resource = resource
        self._namespace = namespace
        self._label_selector = label_selector
        self._field_selector = field_selector
        self._settings = settings or InformerSettings()
        self._rand = rand
        self._clock = clock
        self._cache: dict[ObjectKey, Obj] = {}
        self._by_namespace: dict[str, dict[ObjectKey, Obj]] = {}
        self._handlers: list[Handler] = []
        self._resource_version: str | None = None
        self._synced = asyncio.Event()
        self.stats = InformerStats()
        self._log = log.bind(resource=resource.plural, namespace=namespace or "*")

    # -- the cache ----------------------------------------------------------------------------

    def add_handler(self, handler: Handler) -> None:
        """Call `handler` for every change from now on (and for every object on the next list).

        Add handlers before `run()`; a handler added later misses the objects already cached
        until they change (use `keys()` to catch up).
        """
        self._handlers.append(handler)

    def get(self, key: ObjectKey) -> Obj | None:
        """The cached object (do not mutate it), or None."""
        return self._cache.get(key)

    def keys(self) -> list[ObjectKey]:
        """Keys of all cached objects."""
        return list(self._cache)

    def items(self) -> Iterator[Obj]:
        """All cached objects (do not mutate them)."""
        return iter(list(self._cache.values()))

    def in_namespace(self, namespace: str) -> list[Obj]:
        """The cached objects of `namespace` (do not mutate them), from the index."""
        return list(self._by_namespace.get(namespace, {}).values())

    def __len__(self) -> int:
        return len(self._cache)

    @property
    def resource(self) -> Resource:
        """What this informer watches."""
        return self._resource

    @property
    def resource_version(self) -> str | None:
        """The newest resourceVersion seen (list, event or bookmark)."""
        return self._resource_version

    @property
    def has_synced(self) -> bool:
        """Whether the first list has been applied to the cache."""
        return self._synced.is_set()

    async def wait_synced(self) -> None:
        """Wait until the first list has been applied (WaitForCacheSync)."""
        await self._synced.wait()

    # -- running ------------------------------------------------------------------------------

    async def run(self) -> None:
        """List and watch until cancelled. Never returns; only cancellation stops it.

        API errors are retried forever with backoff (an informer that gives up leaves its
        controller blind); anything else is a bug and propagates.
        """
        async with asyncio.TaskGroup() as tg:
            if self._settings.resync_seconds:
                tg.create_task(self._resync(self._settings.resync_seconds), name="informer-resync")
            await self._list_and_watch()

    async def _list_and_watch(self) -> None:
        need_list = True
        failures = 0
        while True:
            try:
                if need_list:
                    await self._list()
                    need_list = False
                    failures = 0
                healthy = await self._watch()
                if healthy:
                    failures = 0
                    continue
                delay = self._settings.backoff.delay(failures, rand=self._rand())
                failures += 1
                self._log.info("informer.watch_too_short", retry_in=round(delay, 3))
            except Gone as exc:
                self.stats.expired += 1
                if not need_list:
                    self._log.info(
                        "informer.expired_relisting", resource_version=self._resource_version
                    )
                    need_list = True
                    continue
                # A fresh list itself answered 410 (no resourceVersion of ours involved): the
                # server is confused, so back off rather than relist in a tight loop.
                delay = self._settings.backoff.delay(failures, rand=self._rand())
                failures += 1
                self._log.warning(
                    "informer.list_expired", error=repr(exc), retry_in=round(delay, 3)
                )
            except KubeError as exc:
                self.stats.failures += 1
                delay = self._settings.backoff.delay(failures, rand=self._rand())
                if exc.retry_after is not None:
                    delay = max(delay, exc.retry_after)
                failures += 1
                self._log.warning(
                    "informer.retrying",
                    step="list" if need_list else "watch",
                    error=repr(exc),
                    retry_in=round(delay, 3),
                )
            await asyncio.sleep(delay)

    async def _list(self) -> None:
        """Read every object (paged) and replace the cache with them."""
        items: dict[ObjectKey, Obj] = {}
        token: str | None = None
        page_size: int | None = self._settings.page_size
        resource_version = ""
        while True:
            try:
                page = await self._client.list(
                    self._resource,
                    namespace=self._namespace,
                    label_selector=self._label_selector,
                    field_selector=self._field_selector,
                    limit=page_size,
                    continue_token=token,
                )
            except Gone:
                if token is None:
                    raise
                # The continue token expired between pages: start over in one unpaged list,
                # as the reflector does.
                items, token, page_size = {}, None, None
                continue
            for obj in page.items:
                items[ObjectKey.of(obj)] = obj
            resource_version = page.resource_version
            token = page.continue_token
            if not token:
                break
        self.stats.lists += 1
        self._replace(items, resource_version)

    def _replace(self, items: dict[ObjectKey, Obj], resource_version: str) -> None:
        old = self._cache
        self._cache = items
        self._by_namespace = {}
        for key, obj in items.items():
            self._by_namespace.setdefault(key.namespace, {})[key] = obj
        self._resource_version = resource_version
        for key, obj in items.items():
            previous = old.get(key)
            if previous is None:
                self._emit(InformerEvent(EventType.ADDED, key, obj))
            elif version_of(previous) != version_of(obj):
                self._emit(InformerEvent(EventType.MODIFIED, key, obj, previous))
        for key, previous in old.items():
            if key not in items:
                self._emit(InformerEvent(EventType.DELETED, key, previous))
        if not self._synced.is_set():
            self._synced.set()
            self._log.info("informer.synced", objects=len(items), resource_version=resource_version)

    async def _watch(self) -> bool:
        """One watch from the current resourceVersion, until the server ends it.

        Returns False when the watch ended cleanly but suspiciously soon with no event.
        """
        base = self._settings.watch_timeout_seconds
        timeout = int(base * (1.0 + self._rand()))
        started = self._clock()
        seen = 0
        self.stats.watches += 1
        async with self._client.watch(
            self._resource,
            namespace=self._namespace,
            resource_version=self._resource_version,
            label_selector=self._label_selector,
            field_selector=self._field_selector,
            timeout_seconds=timeout,
            allow_bookmarks=True,
        ) as events:
            async for event in events:
                seen += 1
                self._apply(event)
        return seen > 0 or self._clock() - started >= self._settings.min_healthy_watch_seconds

    def _apply(self, event: WatchEvent) -> None:
        self.stats.events += 1
        if (rv := event.resource_version) is not None:
            self._resource_version = rv
        if event.type == "BOOKMARK":
            return
        key = ObjectKey.of(event.object)
        previous = self._cache.get(key)
        if event.type == "DELETED":
            self._cache.pop(key, None)
            self._by_namespace.get(key.namespace, {}).pop(key, None)
            self._emit(InformerEvent(EventType.DELETED, key, event.object))
        elif event.type in ("ADDED", "MODIFIED"):
            event.object.setdefault("apiVersion", self._resource.api_version)
            event.object.setdefault("kind", self._resource.kind)
            self._cache[key] = self._by_namespace.setdefault(key.namespace, {})[key] = event.object
            kind = EventType.ADDED if previous is None else EventType.MODIFIED
            self._emit(InformerEvent(kind, key, event.object, previous))
        else:
            self._log.warning("informer.unknown_event", type=event.type)

    def _emit(self, event: InformerEvent) -> None:
        for handler in self._handlers:
            try:
                handler(event)
            except Exception:
                # A broken handler must not blind every other handler and the cache.
                self._log.exception("informer.handler_failed", key=str(event.key))

    async def _resync(self, period: float) -> None:
        while True:
            await asyncio.sleep(period)
            if not self.has_synced:
                continue
            for key, obj in list(self._cache.items()):
                self._emit(InformerEvent(EventType.SYNC, key, obj, obj))


def cached_in(informers: Iterable[Informer], key: ObjectKey) -> Obj | None:
    """The first of `informers` to cache `key` has its copy (do not mutate it); else None. For
    a kind watched by one informer per namespace."""
    for informer in informers:
        if (obj := informer.get(key)) is not None:
            return obj
    return None


def version_of(obj: Mapping[str, Any]) -> str | None:
    """An object's metadata.resourceVersion, or None when it has none."""
    return metadata(obj).resource_version
