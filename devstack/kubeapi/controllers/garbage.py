"""Garbage collection, as kube-controller-manager's collector does it from its owner graph:
objects whose owners are all gone are deleted (background); an owner in foreground deletion has
its dependents deleted, and its `foregroundDeletion` finalizer dropped once none is left.

Not here: orphaning, which is done at delete time (deletion.py).
"""

from __future__ import annotations

from collections.abc import Iterable

from devstack.kubeapi.store import Event
from shared.api.meta import Obj

from .base import Kit, terminating

Ident = tuple[str, str, str]
"""(resource key, namespace or "", name) of a stored object."""


def _ident(key: str, obj: Obj) -> Ident:
    md = obj["metadata"]
    return key, str(md.get("namespace") or ""), str(md["name"])


def _owner_uids(obj: Obj | None) -> set[str]:
    refs = ((obj or {}).get("metadata") or {}).get("ownerReferences") or []
    return {str(ref.get("uid")) for ref in refs}


def _waits_for_dependents(obj: Obj) -> bool:
    md = obj["metadata"]
    return bool(md.get("deletionTimestamp")) and "foregroundDeletion" in (
        md.get("finalizers") or []
    )


class OwnerGraph:
    """Who owns whom, kept from the store's write events, as kube-controller-manager's garbage
    collector keeps its graph from informers: a pass looks only at the objects a write concerns
    (a new dependent, an owner gone, an owner waiting in foreground deletion), not at every
    object of every kind."""

    def __init__(self) -> None:
        self.by_uid: dict[str, Ident] = {}
        self.dependents: dict[str, set[Ident]] = {}
        self.pending: set[Ident] = set()
        self.ready = False
        """False until `rebuild`: events seen before it are folded in by the rebuild."""

    def rebuild(self, objects: Iterable[tuple[str, Obj]]) -> None:
        self.by_uid, self.dependents, self.pending = {}, {}, set()
        for key, obj in objects:
            self._add(key, obj)
        self.ready = True

    def observe(self, ev: Event) -> None:
        if not self.ready:
            return
        ident = _ident(ev.key, ev.obj)
        uid = str(ev.obj["metadata"].get("uid"))
        before = _owner_uids(ev.old) if ev.type != "ADDED" else set()
        if ev.type == "DELETED":
            self.by_uid.pop(uid, None)
            self.pending |= self.dependents.get(uid, set())  # orphans now, unless adopted
            for owner in before | _owner_uids(ev.obj):
                self._unlink(owner, ident)
                if (found := self.by_uid.get(owner)) is not None:
                    self.pending.add(found)  # one dependent fewer to wait for
            return
        for owner in before:
            self._unlink(owner, ident)
        self._add(ev.key, ev.obj)

    def _add(self, key: str, obj: Obj) -> None:
        ident = _ident(key, obj)
        self.by_uid[str(obj["metadata"].get("uid"))] = ident
        owners = _owner_uids(obj)
        for owner in owners:
            self.dependents.setdefault(owner, set()).add(ident)
        if owners or _waits_for_dependents(obj):
            self.pending.add(ident)

    def _unlink(self, owner: str, ident: Ident) -> None:
        deps = self.dependents.get(owner)
        if deps is not None:
            deps.discard(ident)
            if not deps:
                del self.dependents[owner]


def collect_garbage(kit: Kit, graph: OwnerGraph) -> None:
    """Delete dependents whose owners are all gone (background), delete the dependents of
    an owner in foreground deletion and drop its finalizer once none is left: for the
    objects the owner graph marked since the last pass (all of them on the first)."""
    if not graph.ready:
        store = kit.ops.store
        graph.rebuild(
            (rt.key, o) for rt in kit.ops.registry.all() for o in store.objects_of(rt.key)
        )
    pending, graph.pending = graph.pending, set()
    for ident in sorted(pending):
        retrying = kit.retry
        kit.retry = False
        _collect(kit, graph, ident)
        if kit.retry:
            graph.pending.add(ident)  # failed: again on the retry pass
        kit.retry = kit.retry or retrying


def _collect(kit: Kit, graph: OwnerGraph, ident: Ident) -> None:
    key, namespace, name = ident
    rt = kit.ops.registry.by_key(key)
    o = kit.ops.store.peek(key, namespace, name)
    if rt is None or o is None:
        return
    owners = _owner_uids(o)
    if owners and not terminating(o) and not owners & graph.by_uid.keys():
        kit.delete("gc", rt, o, {"propagationPolicy": "Background"})
        return
    if not _waits_for_dependents(o):
        return
    deps = []
    for dkey, dns, dname in sorted(graph.dependents.get(str(o["metadata"]["uid"]), set())):
        d = kit.ops.store.peek(dkey, dns, dname)
        drt = kit.ops.registry.by_key(dkey)
        if d is not None and drt is not None:
            deps.append((drt, d))
    for drt, d in deps:
        if not terminating(d):
            kit.delete("gc foreground", drt, d, {"propagationPolicy": "Foreground"})
    if not deps:
        kit.drop_finalizer("gc finalize", rt, o, "foregroundDeletion")
