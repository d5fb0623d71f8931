"""Delete, as kube-apiserver's generic registry does it: preconditions (uid, resourceVersion),
the propagation policy (Orphan is done here, Background and Foreground by the garbage collector),
finalizers and deletionTimestamp (a graceful deletion: a Pod's grace period, finalizers, a
Namespace's `spec.finalizers`, a CRD's cleanup), a shorter grace period for an object already in
one, dry run, and the response: the deleted object or a Status.

Not here: who removes a terminating object at the end (the controllers and the kubelet).
"""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from shared.api.meta import Obj

from . import builtins, crds, errors, writes
from .context import TIME_FORMAT, Context
from .errors import Cause
from .resources import ResourceType
from .storing import after_delete, spec_finalizers

if TYPE_CHECKING:
    from .operations import Operations


POLICIES = ("Orphan", "Background", "Foreground")


def later(timestamp: str, seconds: int) -> str:
    """`timestamp` (metav1.Time) moved by `seconds`."""
    moved = datetime.strptime(timestamp, TIME_FORMAT).replace(tzinfo=UTC) + timedelta(
        seconds=seconds
    )
    return moved.strftime(TIME_FORMAT)


def delete(
    ops: Operations,
    rt: ResourceType,
    version: str,
    namespace: str,
    name: str,
    options: Obj | None,
    ctx: Context,
) -> tuple[Obj, bool]:
    """Delete or start deleting; returns (response body, deleted now)."""
    options = options or {}
    obj = writes.existing(ops, rt, namespace, name)
    md = obj["metadata"]
    _check_preconditions(rt, md, options.get("preconditions") or {})
    policy = _propagation_policy(options)
    if md.get("deletionTimestamp") and md.get("deletionGracePeriodSeconds"):
        return _shorten_grace_period(ops, rt, version, obj, options, ctx)
    finalizers = _finalizers(ops, rt, obj, policy)
    if policy == "Orphan" and not ctx.dry_run:
        orphan_dependents(ops, md["uid"])
    grace = builtins.pod_grace_period(obj, options) if rt.builtin and rt.kind == "Pod" else 0
    if grace or finalizers or spec_finalizers(rt, obj):
        return _start_deleting(ops, rt, version, obj, finalizers, grace, ctx), False
    if ctx.dry_run:
        return ops.render(rt, version, obj, shared=True), True
    gone = ops.store.delete(rt.key, md.get("namespace", ""), name)
    after_delete(ops, rt, gone)
    if rt.return_deleted_object:
        return ops.render(rt, version, gone, shared=True), True
    return _success(rt, name, md["uid"]), True


def _check_preconditions(rt: ResourceType, md: Obj, pre: Obj) -> None:
    """A precondition (uid, resourceVersion) the object does not meet is a 409."""
    for field, shown in (("uid", "UID"), ("resourceVersion", "ResourceVersion")):
        if pre.get(field) and pre[field] != md[field]:
            raise errors.conflict(
                rt.plural,
                rt.group,
                md["name"],
                f"Precondition failed: {shown} in precondition: {pre[field]}, {shown} in object "
                f"meta: {md[field]}",
            )


def _propagation_policy(options: Obj) -> str:
    """`propagationPolicy`, else the older `orphanDependents`, else Background."""
    policy = options.get("propagationPolicy")
    if policy is None and options.get("orphanDependents") is not None:
        policy = "Orphan" if options["orphanDependents"] else "Background"
    policy = policy or "Background"
    if policy not in POLICIES:
        cause = Cause(
            "FieldValueNotSupported",
            f'Unsupported value: "{policy}": supported values: "Foreground", "Background", '
            '"Orphan"',
            "propagationPolicy",
        )
        raise errors.invalid("DeleteOptions", "", "", [cause])
    return str(policy)


def _finalizers(ops: Operations, rt: ResourceType, obj: Obj, policy: str) -> list[str]:
    """The finalizers the object is deleted with: its own, `foregroundDeletion` for a
    Foreground deletion of an object with dependents, a CRD's cleanup."""
    md = obj["metadata"]
    finalizers = list(md.get("finalizers") or [])
    if (
        policy == "Foreground"
        and "foregroundDeletion" not in finalizers
        and dependents(ops, md["uid"])
    ):
        finalizers.append("foregroundDeletion")
    crd = rt.builtin and rt.kind == "CustomResourceDefinition"
    if crd and crds.CLEANUP_FINALIZER not in finalizers:
        finalizers.append(crds.CLEANUP_FINALIZER)
    return finalizers


def _start_deleting(
    ops: Operations,
    rt: ResourceType,
    version: str,
    obj: Obj,
    finalizers: list[str],
    grace: int,
    ctx: Context,
) -> Obj:
    """A graceful deletion: the object stays, with a deletionTimestamp, until its finalizers
    are gone (or, for a Pod, until the kubelet removes it when its grace period ends)."""
    md = obj["metadata"]
    if md.get("deletionTimestamp") and finalizers == list(md.get("finalizers") or []):
        return ops.render(rt, version, obj, shared=True)
    new = copy.deepcopy(obj)
    nmd = new["metadata"]
    if not nmd.get("deletionTimestamp"):
        nmd["deletionTimestamp"] = later(ops.clock(), grace)
        nmd["deletionGracePeriodSeconds"] = grace
        if rt.has_generation and "generation" in nmd:
            nmd["generation"] += 1
    nmd["finalizers"] = finalizers
    if rt.builtin and rt.kind == "Namespace":
        new.setdefault("status", {})["phase"] = "Terminating"
    if rt.builtin and rt.kind == "CustomResourceDefinition":
        conds = new.setdefault("status", {}).setdefault("conditions", [])
        conds.append(
            {
                "type": "Terminating",
                "status": "True",
                "lastTransitionTime": ops.clock(),
                "reason": "InstanceDeletionPending",
                "message": "CustomResourceDefinition marked for deletion; CustomResource "
                "deletion will begin soon",
            }
        )
    if ctx.dry_run:
        return ops.render(rt, version, new, shared=True)
    return ops.render(rt, version, ops.store.update(rt.key, new), shared=True)


def _success(rt: ResourceType, name: str, uid: str) -> Obj:
    details: Obj = {"name": name}
    if rt.group:
        details["group"] = rt.group
    details["kind"] = rt.plural
    details["uid"] = uid
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success",
        "details": details,
    }


def _shorten_grace_period(
    ops: Operations, rt: ResourceType, version: str, obj: Obj, options: Obj, ctx: Context
) -> tuple[Obj, bool]:
    """A delete of an object already in its grace period (rest.BeforeDelete): only a
    shorter `gracePeriodSeconds` changes anything; 0 without finalizers deletes it now."""
    md = obj["metadata"]
    asked = options.get("gracePeriodSeconds")
    current = int(md["deletionGracePeriodSeconds"])
    if asked is None or int(asked) >= current:
        return ops.render(rt, version, obj, shared=True), False
    period = max(int(asked), 0)
    if period == 0 and not md.get("finalizers"):
        if ctx.dry_run:
            return ops.render(rt, version, obj, shared=True), True
        gone = ops.store.delete(rt.key, md.get("namespace", ""), md["name"])
        after_delete(ops, rt, gone)
        return ops.render(rt, version, gone, shared=True), True
    new = copy.deepcopy(obj)
    new["metadata"]["deletionTimestamp"] = later(md["deletionTimestamp"], period - current)
    new["metadata"]["deletionGracePeriodSeconds"] = period
    if ctx.dry_run:
        return ops.render(rt, version, new, shared=True), False
    return ops.render(rt, version, ops.store.update(rt.key, new), shared=True), False


# --- owner references (used by delete and by the garbage collector) ----------------------------


def dependents(ops: Operations, uid: str) -> list[tuple[ResourceType, Obj]]:
    return [
        (rt, o)
        for rt in ops.registry.all()
        for o in ops.store.objects_of(rt.key)
        if any(ref.get("uid") == uid for ref in o["metadata"].get("ownerReferences") or [])
    ]


def orphan_dependents(ops: Operations, uid: str) -> None:
    ctx = Context(manager="kube-controller-manager")
    for rt, o in dependents(ops, uid):
        new = copy.deepcopy(o)
        refs = [r for r in new["metadata"].get("ownerReferences") or [] if r.get("uid") != uid]
        if refs:
            new["metadata"]["ownerReferences"] = refs
        else:
            new["metadata"].pop("ownerReferences", None)
        md = new["metadata"]
        ops.update(
            rt,
            rt.storage_version,
            md.get("namespace", ""),
            md["name"],
            new,
            ctx,
            from_patch=True,
        )
