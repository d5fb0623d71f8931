"""Objects, the one global resourceVersion counter, and the watch history.

Invariants:
- every write (create, update, delete) bumps `rv` by one and stamps it on the object, so
  resourceVersions are unique across every kind, as etcd revisions are;
- `history` holds every event with `rv > oldest_rv`, in order; a watch or a consistent list at
  an RV older than `oldest_rv` is answered 410 Expired (etcd compaction);
- writes are synchronous and happen on the event loop, so fanning an event out to watchers'
  queues inside the write keeps every watcher in RV order with no locks.

The store does not validate, default or authorise anything: the write pipeline (writes.py) does
that.  Objects handed in are owned by the store afterwards and never mutated again; what the
writes return is the stored object itself, shared (`get` alone copies): callers read it, or copy
it to change it, as the controllers do with what `objects_of` lists.
"""

from __future__ import annotations

import asyncio
import copy
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from shared.api.meta import Obj

from . import errors

ObjKey = tuple[str, str]  # (namespace or "", name)


@dataclass(frozen=True)
class Event:
    rv: int
    type: str  # ADDED, MODIFIED, DELETED
    key: str  # resource key, e.g. "apps/deployments"
    obj: Obj
    old: Obj | None  # previous state for MODIFIED and DELETED


@dataclass(eq=False)
class Watcher:
    """One open watch: the server drains `queue`; `None` in the queue means "stop now"."""

    key: str
    namespace: str | None
    queue: asyncio.Queue[Event | None] = field(default_factory=asyncio.Queue)
    closed: bool = False

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.queue.put_nowait(None)


MAX_WATCHER_BACKLOG = 10_000  # a watcher this far behind is closed, as kube-apiserver does


class Store:
    def __init__(self, *, max_history: int = 20_000) -> None:
        self.rv = 1
        self.oldest_rv = 1
        self.max_history = max_history
        self.objects: dict[str, dict[ObjKey, Obj]] = {}
        self.history: deque[Event] = deque()
        self.watchers: set[Watcher] = set()
        self.listeners: list[Callable[[Event], None]] = []

    # --- reads -------------------------------------------------------------------------------

    def get(self, key: str, namespace: str, name: str) -> Obj | None:
        obj = self.objects.get(key, {}).get((namespace, name))
        return copy.deepcopy(obj) if obj is not None else None

    def peek(self, key: str, namespace: str, name: str) -> Obj | None:
        """The stored object itself (callers must not mutate it)."""
        return self.objects.get(key, {}).get((namespace, name))

    def objects_of(self, key: str, namespace: str | None = None) -> list[Obj]:
        """Current objects in (namespace, name) order, as etcd lists them; shared, not copied."""
        bucket = self.objects.get(key, {})
        return [bucket[k] for k in sorted(bucket) if namespace is None or k[0] == namespace]

    def snapshot(self, key: str, rv: int, namespace: str | None = None) -> list[Obj]:
        """Objects of `key` as they were at `rv`, rebuilt by undoing later history."""
        if rv < self.oldest_rv:
            raise errors.expired(f"too old resource version: {rv} ({self.oldest_rv})")
        state = dict(self.objects.get(key, {}))
        for ev in reversed(self.history):
            if ev.rv <= rv:
                break
            if ev.key != key:
                continue
            k = _obj_key(ev.obj)
            if ev.type == "ADDED":
                state.pop(k, None)
            elif ev.old is not None:
                state[k] = ev.old
        return [state[k] for k in sorted(state) if namespace is None or k[0] == namespace]

    def keys(self) -> Iterable[str]:
        return list(self.objects)

    # --- writes ------------------------------------------------------------------------------

    def _stamp(self, obj: Obj) -> int:
        self.rv += 1
        obj.setdefault("metadata", {})["resourceVersion"] = str(self.rv)
        return self.rv

    def create(self, key: str, obj: Obj) -> Obj:
        rv = self._stamp(obj)
        self.objects.setdefault(key, {})[_obj_key(obj)] = obj
        self._record(Event(rv, "ADDED", key, obj, None))
        return obj

    def update(self, key: str, obj: Obj) -> Obj:
        k = _obj_key(obj)
        old = self.objects[key][k]
        rv = self._stamp(obj)
        self.objects[key][k] = obj
        self._record(Event(rv, "MODIFIED", key, obj, old))
        return obj

    def delete(self, key: str, namespace: str, name: str) -> Obj:
        old = self.objects[key].pop((namespace, name))
        # The DELETED event carries the object with a new resourceVersion, as etcd's delete
        # revision is what a watcher resumes from.
        gone = copy.deepcopy(old)
        rv = self._stamp(gone)
        self._record(Event(rv, "DELETED", key, gone, old))
        return gone

    def load(self, rv: int, objects: dict[str, list[Obj]]) -> None:
        """Replace the whole state (from a state file); history starts empty at `rv`."""
        self.rv = rv
        self.oldest_rv = rv
        self.history.clear()
        self.objects = {key: {_obj_key(o): o for o in objs} for key, objs in objects.items()}

    def dump(self) -> tuple[int, dict[str, list[Obj]]]:
        return self.rv, {key: list(bucket.values()) for key, bucket in self.objects.items()}

    def _record(self, ev: Event) -> None:
        self.history.append(ev)
        while len(self.history) > self.max_history:
            self.oldest_rv = self.history.popleft().rv
        for w in list(self.watchers):
            if w.closed or w.key != ev.key:
                continue
            if w.namespace is not None and _obj_key(ev.obj)[0] != w.namespace:
                continue
            if w.queue.qsize() > MAX_WATCHER_BACKLOG:
                self.unwatch(w)
                continue
            w.queue.put_nowait(ev)
        for listener in list(self.listeners):
            listener(ev)

    # --- watch -------------------------------------------------------------------------------

    def watch(
        self, key: str, namespace: str | None, since: int | None
    ) -> tuple[list[Event], Watcher]:
        """Register a watcher; return the history to replay first (events with rv > since).

        `since=None` means "current state as ADDED events", which the caller builds from `list`.
        Raises 410 Expired when `since` is older than the compacted history.
        """
        replay: list[Event] = []
        if since is not None:
            if since < self.oldest_rv:
                raise errors.expired(f"too old resource version: {since} ({self.oldest_rv})")
            for ev in self.history:
                if ev.rv <= since or ev.key != key:
                    continue
                if namespace is not None and _obj_key(ev.obj)[0] != namespace:
                    continue
                replay.append(ev)
        w = Watcher(key, namespace)
        self.watchers.add(w)
        return replay, w

    def unwatch(self, w: Watcher) -> None:
        w.close()
        self.watchers.discard(w)

    def close_watches(self) -> int:
        watchers = list(self.watchers)
        for w in watchers:
            self.unwatch(w)
        return len(watchers)

    def compact(self) -> None:
        """Forget all history: any RV older than the current one now answers 410 Expired."""
        self.history.clear()
        self.oldest_rv = self.rv


def _obj_key(obj: Obj) -> ObjKey:
    md = obj["metadata"]
    return (md.get("namespace", ""), md["name"])
