"""What kube-controller-manager and a kubelet would do, reduced to what tests observe.

One level-triggered loop (`Controllers.run`): every store write marks the world dirty, and a
pass reconciles everything, in this order:
- namespace lifecycle: a Terminating namespace has its contents deleted, then goes;
- CRD cleanup: a deleted CRD has its custom resources deleted, then goes;
- garbage collection: objects whose owners are all gone are deleted; `foregroundDeletion`
  owners wait for their dependents; orphaning is done at delete time (operations.py);
- Deployment -> ReplicaSet (named `<deployment>-<pod-template-hash>`; a template change makes a
  new ReplicaSet and scales the old ones down as the new Pods turn ready) and status counts;
- ReplicaSet -> Pods (generateName `<rs>-`, labels from the template, controller ownerRef),
  replacing deleted Pods, and status counts;
- a scheduler and kubelet: every Pending Pod is bound to `NODE` and turns Running and Ready
  `pod_ready_delay` seconds after it was first seen; a Pod in its grace period is deleted
  `pod_termination_delay` seconds (at most the grace period) after it was first seen so.
Passes are cheap at test sizes (tens to hundreds of objects).  Not emulated: scheduling
decisions, container restarts, probes, minReadySeconds, maxSurge arithmetic.
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import json
import logging
import time
from collections.abc import Iterable
from typing import Any

from . import crds, errors, events, selectors
from .operations import Context, Operations, utcnow
from .resources import ResourceType
from .store import Event

Obj = dict[str, Any]
log = logging.getLogger(__name__)

_HASH_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
MANAGER = "kube-controller-manager"
RETRY_DELAY = 0.1  # seconds before a pass retries writes that failed (conflicts, races)
NODE = "node-1"  # the one node every Pod is bound to (there is no Node object)


def pod_template_hash(template: Obj) -> str:
    digest = int.from_bytes(
        hashlib.sha256(json.dumps(template, sort_keys=True).encode()).digest()[:8], "big"
    )
    out = ""
    for _ in range(10):
        digest, r = divmod(digest, len(_HASH_ALPHABET))
        out += _HASH_ALPHABET[r]
    return out


def _controller_of(o: Obj) -> str | None:
    for ref in o["metadata"].get("ownerReferences") or []:
        if ref.get("controller"):
            return str(ref.get("uid"))
    return None


def _owner_ref(kind: str, api_version: str, o: Obj) -> Obj:
    return {
        "apiVersion": api_version,
        "kind": kind,
        "name": o["metadata"]["name"],
        "uid": o["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def _pod_ready(p: Obj) -> bool:
    for c in (p.get("status") or {}).get("conditions") or []:
        if c.get("type") == "Ready":
            return bool(c.get("status") == "True")
    return False


def _set_condition(conds: list[Obj], cond: Obj, now: str) -> list[Obj]:
    """Replace the condition of the same type, keeping its timestamps if nothing changed."""
    out = [c for c in conds if c.get("type") != cond["type"]]
    old = next((c for c in conds if c.get("type") == cond["type"]), None)
    new = dict(cond)
    if old and old.get("status") == cond["status"] and old.get("reason") == cond.get("reason"):
        new["lastTransitionTime"] = old.get("lastTransitionTime", now)
        if "lastUpdateTime" in old:
            new["lastUpdateTime"] = old["lastUpdateTime"]
    else:
        new["lastTransitionTime"] = now
        if "lastUpdateTime" in cond:
            new["lastUpdateTime"] = now
    out.append(new)
    return sorted(
        out,
        key=lambda c: (
            [x.get("type") for x in conds].index(c["type"])
            if c["type"] in [x.get("type") for x in conds]
            else 99
        ),
    )


WORKLOAD_KEYS = frozenset({"/pods", "apps/deployments", "apps/replicasets"})
"""The kinds the workload controllers (Deployment, ReplicaSet, kubelet) read."""
CONTROLLED_KEYS = WORKLOAD_KEYS | {"/namespaces", "apiextensions.k8s.io/customresourcedefinitions"}
"""The kinds the controllers act on; of the rest, only ownership and deletion concern them."""


def _concerns_controllers(ev: Event) -> bool:
    if ev.key in CONTROLLED_KEYS or ev.type == "DELETED":  # a deletion: its dependents (GC)
        return True
    for obj in (ev.obj, ev.old):
        md = (obj or {}).get("metadata") or {}
        if md.get("ownerReferences") or md.get("deletionTimestamp"):
            return True
    return False


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


class Controllers:
    def __init__(
        self, ops: Operations, *, pod_ready_delay: float, pod_termination_delay: float | None
    ) -> None:
        self.ops = ops
        self.pod_ready_delay = pod_ready_delay
        self.pod_termination_delay = pod_termination_delay
        self._dirty = asyncio.Event()
        self._first_seen: dict[str, float] = {}
        self._terminating_since: dict[str, float] = {}
        """When (monotonic) the kubelet first saw each Pod in its grace period."""
        self._ip_counter = 0
        self._retry = False
        self._workload_due: float | None = None
        """When (monotonic) the kubelet's next timer is due, if one is."""
        self._workloads_dirty = True
        """Whether the workload controllers have anything to look at: a workload changed, or a
        timer (a Pod turning Ready, a retry) is due. The other writes (say, a Secret's owner
        going) need only the namespace, CRD and garbage collectors."""
        self._owners = OwnerGraph()
        ops.store.listeners.append(self._on_write)

    def _on_write(self, ev: Event) -> None:
        """Wake the controllers for writes that can give them work, not for every write: a pass
        runs on the loop that serves the requests."""
        self._owners.observe(ev)
        if _concerns_controllers(ev):
            self._dirty.set()
            if ev.key in WORKLOAD_KEYS:
                self._workloads_dirty = True

    async def run(self) -> None:
        """Reconcile until cancelled; a pass that fails is logged and retried on the next write."""
        self._dirty.set()
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            due: float | None = None
            try:
                due = self.reconcile()
            except Exception:
                log.exception("controller pass failed")
                self._workloads_dirty = True
                due = 0.5
            if due is not None:
                try:
                    # asyncio.timeout, not wait_for: in 3.11 wait_for can swallow a cancellation
                    # that races with the inner wait finishing, which would hang shutdown
                    async with asyncio.timeout(max(due, 0.001)):
                        await self._dirty.wait()
                except TimeoutError:
                    self._workloads_dirty = True
                    self._dirty.set()

    # --- one pass ------------------------------------------------------------------------------

    def reconcile(self) -> float | None:
        """One pass over everything; returns seconds until a timer is due, if any."""
        self._retry = False
        self._namespaces()
        self._crd_cleanup()
        self._garbage_collect()
        now = time.monotonic()
        if self._workloads_dirty or (self._workload_due is not None and now >= self._workload_due):
            self._workloads_dirty = False
            self._deployments()
            self._replicasets()
            wait = self._kubelet()
            self._workload_due = None if wait is None else now + wait
        due = None if self._workload_due is None else max(0.0, self._workload_due - now)
        if self._retry:
            self._workloads_dirty = True  # the retry may be any controller's
            due = RETRY_DELAY if due is None else min(due, RETRY_DELAY)
        return due

    def _rt(self, key: str) -> ResourceType:
        rt = self.ops.registry.by_key(key)
        assert rt is not None, key
        return rt

    def _ctx(self) -> Context:
        return Context(manager=MANAGER)

    def _try(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except errors.ApiError as exc:
            if exc.code not in (403, 404, 409):
                log.warning("%s: %s", what, exc)
            self._retry = True  # try again after RETRY_DELAY, not in a hot loop
            return None

    def _event(self, rt: ResourceType, obj: Obj, reason: str, message: str, component: str) -> None:
        """Record a Normal Event about `obj`, as the named controller's EventRecorder does; a
        failure to record is logged, never retried (events are best effort in kube too)."""
        body = events.event(
            about=events.reference(rt, obj),
            reason=reason,
            message=message,
            component=component,
            now=utcnow(),
        )
        try:
            events.record(self.ops, self._ctx(), body)
        except errors.ApiError as exc:
            log.warning("event %s: %s", reason, exc)

    def _scaling_event(self, d_rt: ResourceType, d: Obj, rs_name: str, was: int, now: int) -> None:
        direction = "up" if now > was else "down"
        message = f"Scaled {direction} replica set {rs_name} from {was} to {now}"
        self._event(d_rt, d, "ScalingReplicaSet", message, "deployment-controller")

    def _namespaces(self) -> None:
        ns_rt = self._rt("/namespaces")
        for ns in self.ops.store.objects_of(ns_rt.key):
            md = ns["metadata"]
            if not md.get("deletionTimestamp"):
                continue
            name = md["name"]
            remaining = 0
            for rt in self.ops.registry.all():
                if not rt.namespaced:
                    continue
                for o in self.ops.store.objects_of(rt.key, name):
                    remaining += 1
                    if not o["metadata"].get("deletionTimestamp"):
                        self._try(
                            "namespace cleanup",
                            self.ops.delete,
                            rt,
                            rt.storage_version,
                            name,
                            o["metadata"]["name"],
                            {"propagationPolicy": "Background"},
                            self._ctx(),
                        )
            if remaining == 0 and (ns.get("spec") or {}).get("finalizers"):
                new = copy.deepcopy(ns)
                new["spec"]["finalizers"] = []
                self._try(
                    "namespace finalize",
                    self.ops.update,
                    ns_rt,
                    "v1",
                    "",
                    name,
                    new,
                    self._ctx(),
                    from_patch=True,
                )

    def _crd_cleanup(self) -> None:
        crd_rt = self._rt("apiextensions.k8s.io/customresourcedefinitions")
        for crd in self.ops.store.objects_of(crd_rt.key):
            md = crd["metadata"]
            if not md.get("deletionTimestamp") or crds.CLEANUP_FINALIZER not in (
                md.get("finalizers") or []
            ):
                continue
            spec = crd["spec"]
            rt = self.ops.registry.by_key(f"{spec['group']}/{spec['names']['plural']}")
            items = self.ops.store.objects_of(rt.key) if rt else []
            for o in items:
                if rt is not None and not o["metadata"].get("deletionTimestamp"):
                    omd = o["metadata"]
                    self._try(
                        "crd cleanup",
                        self.ops.delete,
                        rt,
                        rt.storage_version,
                        omd.get("namespace", ""),
                        omd["name"],
                        None,
                        self._ctx(),
                    )
            if not items:
                new = copy.deepcopy(crd)
                new["metadata"]["finalizers"] = [
                    f for f in md["finalizers"] if f != crds.CLEANUP_FINALIZER
                ]
                self._try(
                    "crd finalize",
                    self.ops.update,
                    crd_rt,
                    "v1",
                    "",
                    md["name"],
                    new,
                    self._ctx(),
                    from_patch=True,
                )

    def _garbage_collect(self) -> None:
        """Delete dependents whose owners are all gone (background), delete the dependents of
        an owner in foreground deletion and drop its finalizer once none is left: for the
        objects the owner graph marked since the last pass (all of them on the first)."""
        graph = self._owners
        if not graph.ready:
            store = self.ops.store
            graph.rebuild(
                (rt.key, o) for rt in self.ops.registry.all() for o in store.objects_of(rt.key)
            )
        pending, graph.pending = graph.pending, set()
        for ident in sorted(pending):
            retrying = self._retry
            self._retry = False
            self._collect(ident)
            if self._retry:
                graph.pending.add(ident)  # failed: again on the retry pass
            self._retry = self._retry or retrying

    def _collect(self, ident: Ident) -> None:
        key, namespace, name = ident
        rt = self.ops.registry.by_key(key)
        o = self.ops.store.peek(key, namespace, name)
        if rt is None or o is None:
            return
        graph = self._owners
        md = o["metadata"]
        owners = _owner_uids(o)
        if owners and not md.get("deletionTimestamp") and not owners & graph.by_uid.keys():
            self._try(
                "gc",
                self.ops.delete,
                rt,
                rt.storage_version,
                namespace,
                name,
                {"propagationPolicy": "Background"},
                self._ctx(),
            )
            return
        if not _waits_for_dependents(o):
            return
        deps = []
        for dkey, dns, dname in sorted(graph.dependents.get(str(md["uid"]), set())):
            d = self.ops.store.peek(dkey, dns, dname)
            drt = self.ops.registry.by_key(dkey)
            if d is not None and drt is not None:
                deps.append((drt, d))
        for drt, d in deps:
            if not d["metadata"].get("deletionTimestamp"):
                dmd = d["metadata"]
                self._try(
                    "gc foreground",
                    self.ops.delete,
                    drt,
                    drt.storage_version,
                    dmd.get("namespace", ""),
                    dmd["name"],
                    {"propagationPolicy": "Foreground"},
                    self._ctx(),
                )
        if not deps:
            new = copy.deepcopy(o)
            new["metadata"]["finalizers"] = [
                f for f in md["finalizers"] if f != "foregroundDeletion"
            ]
            self._try(
                "gc finalize",
                self.ops.update,
                rt,
                rt.storage_version,
                namespace,
                name,
                new,
                self._ctx(),
                from_patch=True,
            )

    # --- workloads -----------------------------------------------------------------------------

    def _adopt(
        self, child_rt: ResourceType, owner: Obj, kind: str, selector: Obj | None
    ) -> list[Obj]:
        """The children `owner` controls, after adopting matching orphans (no controller ref,
        not terminating), as the ReplicaSet and Deployment controllers do."""
        md = owner["metadata"]
        sel = selectors.selector_from_label_selector(selector)
        out: list[Obj] = []
        for child in self.ops.store.objects_of(child_rt.key, md["namespace"]):
            controller = _controller_of(child)
            if controller == md["uid"]:
                out.append(child)
            elif (
                controller is None
                and sel
                and not child["metadata"].get("deletionTimestamp")
                and selectors.labels_match(sel, child)
            ):
                adopted = copy.deepcopy(child)
                refs = adopted["metadata"].setdefault("ownerReferences", [])
                refs.append(_owner_ref(kind, "apps/v1", owner))
                cmd = adopted["metadata"]
                got = self._try(
                    "adopt",
                    self.ops.update,
                    child_rt,
                    "v1",
                    cmd["namespace"],
                    cmd["name"],
                    adopted,
                    self._ctx(),
                    from_patch=True,
                )
                if got is not None:
                    out.append(got)
        return out

    def _deployments(self) -> None:
        d_rt = self._rt("apps/deployments")
        rs_rt = self._rt("apps/replicasets")
        for d in self.ops.store.objects_of(d_rt.key):
            md = d["metadata"]
            if md.get("deletionTimestamp"):
                continue
            ns, name = md["namespace"], md["name"]
            spec = d.get("spec") or {}
            desired = int(spec.get("replicas", 1))
            template = spec.get("template") or {}
            h = pod_template_hash(template)
            owned = self._adopt(rs_rt, d, "Deployment", spec.get("selector"))
            new_rs = next(
                (
                    rs
                    for rs in owned
                    if (rs["metadata"].get("labels") or {}).get("pod-template-hash") == h
                ),
                None,
            )
            revisions = [
                int(
                    (rs["metadata"].get("annotations") or {}).get(
                        "deployment.kubernetes.io/revision", "0"
                    )
                )
                for rs in owned
            ]
            if new_rs is None:
                revision = max(revisions, default=0) + 1
                tmpl = copy.deepcopy(template)
                tmpl.setdefault("metadata", {}).setdefault("labels", {})["pod-template-hash"] = h
                selector = copy.deepcopy(spec.get("selector") or {})
                selector.setdefault("matchLabels", {})["pod-template-hash"] = h
                body = {
                    "apiVersion": "apps/v1",
                    "kind": "ReplicaSet",
                    "metadata": {
                        "name": f"{name}-{h}",
                        "namespace": ns,
                        "labels": dict(tmpl["metadata"]["labels"]),
                        "annotations": {
                            "deployment.kubernetes.io/desired-replicas": str(desired),
                            "deployment.kubernetes.io/max-replicas": str(desired + 1),
                            "deployment.kubernetes.io/revision": str(revision),
                        },
                        "ownerReferences": [_owner_ref("Deployment", "apps/v1", d)],
                    },
                    "spec": {
                        "replicas": desired,
                        "minReadySeconds": spec.get("minReadySeconds", 0),
                        "selector": selector,
                        "template": tmpl,
                    },
                }
                new_rs = self._try(
                    "create replicaset", self.ops.create, rs_rt, "v1", ns, body, self._ctx()
                )
                if new_rs is None:
                    continue
                owned.append(new_rs)
                if desired > 0:
                    self._scaling_event(d_rt, d, new_rs["metadata"]["name"], 0, desired)
            else:
                revision = int(
                    (new_rs["metadata"].get("annotations") or {}).get(
                        "deployment.kubernetes.io/revision", "1"
                    )
                )
                if new_rs["spec"].get("replicas") != desired:
                    upd = copy.deepcopy(new_rs)
                    upd["spec"]["replicas"] = desired
                    upd["metadata"].setdefault("annotations", {})[
                        "deployment.kubernetes.io/desired-replicas"
                    ] = str(desired)
                    if self._try(
                        "scale replicaset",
                        self.ops.update,
                        rs_rt,
                        "v1",
                        ns,
                        upd["metadata"]["name"],
                        upd,
                        self._ctx(),
                    ):
                        was = int(new_rs["spec"].get("replicas", 0))
                        self._scaling_event(d_rt, d, upd["metadata"]["name"], was, desired)
            recreate = (spec.get("strategy") or {}).get("type") == "Recreate"
            new_ready = int((new_rs.get("status") or {}).get("readyReplicas", 0))
            budget = 0 if recreate else max(0, desired - new_ready)
            old = sorted(
                (rs for rs in owned if rs["metadata"]["name"] != new_rs["metadata"]["name"]),
                key=lambda r: int(
                    (r["metadata"].get("annotations") or {}).get(
                        "deployment.kubernetes.io/revision", "0"
                    )
                ),
                reverse=True,
            )
            for rs in old:
                want = min(int(rs["spec"].get("replicas", 0)), budget)
                budget -= want
                if rs["spec"].get("replicas") != want:
                    upd = copy.deepcopy(rs)
                    upd["spec"]["replicas"] = want
                    if self._try(
                        "scale old replicaset",
                        self.ops.update,
                        rs_rt,
                        "v1",
                        ns,
                        rs["metadata"]["name"],
                        upd,
                        self._ctx(),
                    ):
                        was = int(rs["spec"].get("replicas", 0))
                        self._scaling_event(d_rt, d, rs["metadata"]["name"], was, want)
            if (md.get("annotations") or {}).get("deployment.kubernetes.io/revision") != str(
                revision
            ):
                upd = copy.deepcopy(d)
                upd["metadata"].setdefault("annotations", {})[
                    "deployment.kubernetes.io/revision"
                ] = str(revision)
                d = (
                    self._try(
                        "annotate deployment",
                        self.ops.update,
                        d_rt,
                        "v1",
                        ns,
                        name,
                        upd,
                        self._ctx(),
                    )
                    or d
                )
            self._deployment_status(d_rt, d, owned, new_rs, desired)

    def _deployment_status(
        self, d_rt: ResourceType, d: Obj, owned: list[Obj], new_rs: Obj, desired: int
    ) -> None:
        fresh = [
            self.ops.store.peek(
                "apps/replicasets", rs["metadata"]["namespace"], rs["metadata"]["name"]
            )
            for rs in owned
        ]
        live = [rs for rs in fresh if rs is not None]

        def st(rs: Obj, f: str) -> int:
            return int((rs.get("status") or {}).get(f, 0))

        new_live = next(
            (rs for rs in live if rs["metadata"]["name"] == new_rs["metadata"]["name"]), new_rs
        )
        replicas = sum(st(rs, "replicas") for rs in live)
        ready = sum(st(rs, "readyReplicas") for rs in live)
        available = sum(st(rs, "availableReplicas") for rs in live)
        updated = st(new_live, "replicas")
        now = utcnow()
        old_status = d.get("status") or {}
        conds = list(old_status.get("conditions") or [])
        avail_ok = available >= desired
        conds = _set_condition(
            conds,
            {
                "type": "Available",
                "status": "True" if avail_ok else "False",
                "lastUpdateTime": now,
                "reason": "MinimumReplicasAvailable" if avail_ok else "MinimumReplicasUnavailable",
                "message": "Deployment has minimum availability."
                if avail_ok
                else "Deployment does not have minimum availability.",
            },
            now,
        )
        done = (
            updated == desired
            and st(new_live, "availableReplicas") == desired
            and replicas == desired
        )
        conds = _set_condition(
            conds,
            {
                "type": "Progressing",
                "status": "True",
                "lastUpdateTime": now,
                "reason": "NewReplicaSetAvailable" if done else "ReplicaSetUpdated",
                "message": f'ReplicaSet "{new_rs["metadata"]["name"]}" '
                + ("has successfully progressed." if done else "is progressing."),
            },
            now,
        )
        status: Obj = {
            "observedGeneration": d["metadata"].get("generation", 1),
            "replicas": replicas,
            "updatedReplicas": updated,
            "readyReplicas": ready,
            "availableReplicas": available,
        }
        if desired - available > 0:
            status["unavailableReplicas"] = desired - available
        status = {k: v for k, v in status.items() if v != 0 or k == "observedGeneration"}
        status["conditions"] = conds
        if status != old_status:
            new = copy.deepcopy(d)
            new["status"] = status
            self._try(
                "deployment status",
                self.ops.update,
                d_rt,
                "v1",
                d["metadata"]["namespace"],
                d["metadata"]["name"],
                new,
                self._ctx(),
                subresource="status",
            )

    def _replicasets(self) -> None:
        rs_rt = self._rt("apps/replicasets")
        pod_rt = self._rt("/pods")
        for rs in self.ops.store.objects_of(rs_rt.key):
            md = rs["metadata"]
            if md.get("deletionTimestamp"):
                continue
            ns = md["namespace"]
            spec = rs.get("spec") or {}
            desired = int(spec.get("replicas", 1))
            sel = selectors.selector_from_label_selector(spec.get("selector"))
            pods = self._adopt(pod_rt, rs, "ReplicaSet", spec.get("selector"))
            active = [
                p
                for p in pods
                if not p["metadata"].get("deletionTimestamp")
                and (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed")
            ]
            if len(active) < desired:
                template = spec.get("template") or {}
                tmd = template.get("metadata") or {}
                for _ in range(desired - len(active)):
                    body: Obj = {
                        "apiVersion": "v1",
                        "kind": "Pod",
                        "metadata": {
                            "generateName": f"{md['name']}-",
                            "namespace": ns,
                            "labels": dict(tmd.get("labels") or {}),
                            "ownerReferences": [_owner_ref("ReplicaSet", "apps/v1", rs)],
                        },
                        "spec": copy.deepcopy(template.get("spec") or {}),
                    }
                    if tmd.get("annotations"):
                        body["metadata"]["annotations"] = dict(tmd["annotations"])
                    pod = self._try(
                        "create pod", self.ops.create, pod_rt, "v1", ns, body, self._ctx()
                    )
                    if pod is None:
                        break
                    self._event(
                        rs_rt,
                        rs,
                        "SuccessfulCreate",
                        f"Created pod: {pod['metadata']['name']}",
                        "replicaset-controller",
                    )
            elif len(active) > desired:
                # not-ready pods go first, then the newest (as the ReplicaSet controller ranks them)
                doomed = sorted(
                    active,
                    key=lambda p: (
                        _pod_ready(p),
                        [-ord(c) for c in p["metadata"]["creationTimestamp"]],
                    ),
                )
                for p in doomed[: len(active) - desired]:
                    if self._try(
                        "delete pod",
                        self.ops.delete,
                        pod_rt,
                        "v1",
                        ns,
                        p["metadata"]["name"],
                        None,
                        self._ctx(),
                    ):
                        self._event(
                            rs_rt,
                            rs,
                            "SuccessfulDelete",
                            f"Deleted pod: {p['metadata']['name']}",
                            "replicaset-controller",
                        )
            live = [
                p
                for p in self.ops.store.objects_of(pod_rt.key, ns)
                if _controller_of(p) == md["uid"] and not p["metadata"].get("deletionTimestamp")
            ]
            ready = sum(1 for p in live if _pod_ready(p))
            labeled = sum(1 for p in live if selectors.labels_match(sel, p))
            status: Obj = {
                "replicas": len(live),
                "fullyLabeledReplicas": labeled,
                "readyReplicas": ready,
                "availableReplicas": ready,
                "observedGeneration": md.get("generation", 1),
            }
            status = {
                k: v for k, v in status.items() if v != 0 or k in ("replicas", "observedGeneration")
            }
            if status != (rs.get("status") or {}):
                new = copy.deepcopy(rs)
                new["status"] = status
                self._try(
                    "replicaset status",
                    self.ops.update,
                    rs_rt,
                    "v1",
                    ns,
                    md["name"],
                    new,
                    self._ctx(),
                    subresource="status",
                )

    # --- kubelet -------------------------------------------------------------------------------

    def _kubelet(self) -> float | None:
        pod_rt = self._rt("/pods")
        now = time.monotonic()
        due: float | None = None
        seen: set[str] = set()
        for p in self.ops.store.objects_of(pod_rt.key):
            md = p["metadata"]
            uid = md["uid"]
            seen.add(uid)
            if md.get("deletionGracePeriodSeconds"):
                wait = self._terminate(pod_rt, p, now)
                if wait is not None:
                    due = wait if due is None else min(due, wait)
                continue
            if md.get("deletionTimestamp") or (p.get("status") or {}).get("phase") != "Pending":
                continue
            first = self._first_seen.setdefault(uid, now)
            wait = first + self.pod_ready_delay - now
            if wait > 0:
                due = wait if due is None else min(due, wait)
                continue
            self._start_pod(pod_rt, p)
        for timers in (self._first_seen, self._terminating_since):
            for uid in [uid for uid in timers if uid not in seen]:
                del timers[uid]
        return due

    def _terminate(self, pod_rt: ResourceType, p: Obj, now: float) -> float | None:
        """A Pod in its grace period: its containers stop `pod_termination_delay` seconds after
        the kubelet sees it terminating (at most the grace period), then the kubelet deletes it
        with grace 0 and its uid as a precondition, as kube's kubelet does. Returns the seconds
        left, or None once deleted."""
        md = p["metadata"]
        since = self._terminating_since.setdefault(md["uid"], now)
        grace = float(md["deletionGracePeriodSeconds"])
        stop = (
            grace if self.pod_termination_delay is None else min(grace, self.pod_termination_delay)
        )
        wait = since + stop - now
        if wait > 0:
            return wait
        self._try(
            "kubelet delete",
            self.ops.delete,
            pod_rt,
            "v1",
            md["namespace"],
            md["name"],
            {"gracePeriodSeconds": 0, "preconditions": {"uid": md["uid"]}},
            Context(manager="kubelet"),
        )
        return None

    def _start_pod(self, pod_rt: ResourceType, p: Obj) -> None:
        now = utcnow()
        self._ip_counter += 1
        ip = f"10.244.{(self._ip_counter // 250) % 250}.{self._ip_counter % 250 + 1}"
        containers = (p.get("spec") or {}).get("containers") or []
        new = copy.deepcopy(p)
        new["status"] = {
            "phase": "Running",
            "conditions": [
                {"type": t, "status": "True", "lastProbeTime": None, "lastTransitionTime": now}
                for t in (
                    "PodReadyToStartContainers",
                    "Initialized",
                    "Ready",
                    "ContainersReady",
                    "PodScheduled",
                )
            ],
            "hostIP": "10.0.0.1",
            "hostIPs": [{"ip": "10.0.0.1"}],
            "podIP": ip,
            "podIPs": [{"ip": ip}],
            "startTime": now,
            "qosClass": (p.get("status") or {}).get("qosClass", "BestEffort"),
            "containerStatuses": [
                {
                    "name": c.get("name"),
                    "image": c.get("image"),
                    "imageID": "",
                    "containerID": "containerd://"
                    + hashlib.sha256(
                        f"{p['metadata']['uid']}/{c.get('name')}".encode()
                    ).hexdigest(),
                    "ready": True,
                    "started": True,
                    "restartCount": 0,
                    "state": {"running": {"startedAt": now}},
                }
                for c in containers
            ],
        }
        md = p["metadata"]
        if not (p.get("spec") or {}).get("nodeName"):
            # the scheduler's binding first (a bound Pod is deleted gracefully)
            bound = self._try("bind", self.ops.bind, pod_rt, md["namespace"], md["name"], NODE)
            if bound is None:
                return
            new["metadata"]["resourceVersion"] = bound["metadata"]["resourceVersion"]
        self._try(
            "kubelet",
            self.ops.update,
            pod_rt,
            "v1",
            md["namespace"],
            md["name"],
            new,
            Context(manager="kubelet"),
            subresource="status",
        )
