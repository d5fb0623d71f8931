"""What every emulated controller shares: a `Kit` that writes as kube-controller-manager (a
failed write asks for a retry pass instead of raising), records Events, and adopts orphans; and
the small readers of ownership and readiness the workload controllers use.

Not here: any decision about what to write (that is each controller's module).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from typing import Any

from devstack.kubeapi import errors, events, selectors
from devstack.kubeapi.operations import Context, Operations, utcnow
from devstack.kubeapi.resources import ResourceType
from shared.api.meta import Obj

log = logging.getLogger("devstack.kubeapi.controllers")

MANAGER = "kube-controller-manager"


def controller_of(o: Obj) -> str | None:
    """The uid of the object's controlling owner, if it has one."""
    for ref in o["metadata"].get("ownerReferences") or []:
        if ref.get("controller"):
            return str(ref.get("uid"))
    return None


def owner_ref(kind: str, api_version: str, o: Obj) -> Obj:
    return {
        "apiVersion": api_version,
        "kind": kind,
        "name": o["metadata"]["name"],
        "uid": o["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def pod_ready(p: Obj) -> bool:
    for c in (p.get("status") or {}).get("conditions") or []:
        if c.get("type") == "Ready":
            return bool(c.get("status") == "True")
    return False


def terminating(o: Obj) -> bool:
    return bool(o["metadata"].get("deletionTimestamp"))


class Kit:
    """The writes and reads a controller pass makes. `retry` is set by a write that failed
    (a conflict, a race with a client): the pass asks to run again after a short delay."""

    def __init__(self, ops: Operations) -> None:
        self.ops = ops
        self.retry = False

    def rt(self, key: str) -> ResourceType:
        rt = self.ops.registry.by_key(key)
        assert rt is not None, key
        return rt

    def attempt(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """`fn(*args, **kwargs)`, or None (logged unless routine, and a retry asked) if the
        API refuses it."""
        try:
            return fn(*args, **kwargs)
        except errors.ApiError as exc:
            if exc.code not in (403, 404, 409):
                log.warning("%s: %s", what, exc)
            self.retry = True  # try again after RETRY_DELAY, not in a hot loop
            return None

    def create(self, what: str, rt: ResourceType, namespace: str, body: Obj) -> Obj | None:
        ctx = Context(manager=MANAGER)
        got: Obj | None = self.attempt(
            what, self.ops.create, rt, rt.storage_version, namespace, body, ctx
        )
        return got

    def update(
        self,
        what: str,
        rt: ResourceType,
        new: Obj,
        *,
        manager: str = MANAGER,
        subresource: str | None = None,
        from_patch: bool = False,
    ) -> Obj | None:
        """Store `new` (a changed copy of a stored object) as `manager`."""
        md = new["metadata"]
        got: Obj | None = self.attempt(
            what,
            self.ops.update,
            rt,
            rt.storage_version,
            md.get("namespace", ""),
            md["name"],
            new,
            Context(manager=manager),
            subresource=subresource,
            from_patch=from_patch,
        )
        return got

    def delete(
        self, what: str, rt: ResourceType, o: Obj, options: Obj | None, *, manager: str = MANAGER
    ) -> Any:
        md = o["metadata"]
        ctx = Context(manager=manager)
        namespace = md.get("namespace", "")
        return self.attempt(
            what, self.ops.delete, rt, rt.storage_version, namespace, md["name"], options, ctx
        )

    def drop_finalizer(self, what: str, rt: ResourceType, o: Obj, finalizer: str) -> None:
        new = copy.deepcopy(o)
        new["metadata"]["finalizers"] = [f for f in o["metadata"]["finalizers"] if f != finalizer]
        self.update(what, rt, new, from_patch=True)

    def event(self, rt: ResourceType, obj: Obj, reason: str, message: str, component: str) -> None:
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
            events.record(self.ops, Context(manager=MANAGER), body)
        except errors.ApiError as exc:
            log.warning("event %s: %s", reason, exc)

    def adopt(
        self, child_rt: ResourceType, owner: Obj, kind: str, selector: Obj | None
    ) -> list[Obj]:
        """The children `owner` controls, after adopting matching orphans (no controller ref,
        not terminating), as the ReplicaSet and Deployment controllers do."""
        md = owner["metadata"]
        sel = selectors.selector_from_label_selector(selector)
        out: list[Obj] = []
        for child in self.ops.store.objects_of(child_rt.key, md["namespace"]):
            controller = controller_of(child)
            if controller == md["uid"]:
                out.append(child)
            elif (
                controller is None
                and sel
                and not terminating(child)
                and selectors.labels_match(sel, child)
            ):
                adopted = copy.deepcopy(child)
                refs = adopted["metadata"].setdefault("ownerReferences", [])
                refs.append(owner_ref(kind, "apps/v1", owner))
                got = self.update("adopt", child_rt, adopted, from_patch=True)
                if got is not None:
                    out.append(got)
        return out
