"""The Deployment controller: a Deployment owns one ReplicaSet per pod template (named
`<deployment>-<pod-template-hash>`); a template change makes a new ReplicaSet and scales the old
ones down as the new Pods turn ready (`Recreate`: at once); and its status counts the Pods of
all its ReplicaSets.

Not emulated: minReadySeconds, maxSurge/maxUnavailable arithmetic, progress deadlines.
"""

from __future__ import annotations

import copy
import hashlib
import json

from devstack.kubeapi.context import utcnow
from devstack.kubeapi.resources import ResourceType
from shared.api.meta import Obj

from .base import Kit, owner_ref, terminating

DEPLOYMENTS = "apps/deployments"
REPLICASETS = "apps/replicasets"
REVISION = "deployment.kubernetes.io/revision"
DESIRED = "deployment.kubernetes.io/desired-replicas"
COMPONENT = "deployment-controller"
_HASH_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"


def pod_template_hash(template: Obj) -> str:
    digest = int.from_bytes(
        hashlib.sha256(json.dumps(template, sort_keys=True).encode()).digest()[:8], "big"
    )
    out = ""
    for _ in range(10):
        digest, r = divmod(digest, len(_HASH_ALPHABET))
        out += _HASH_ALPHABET[r]
    return out


def _revision(rs: Obj, default: str) -> int:
    return int((rs["metadata"].get("annotations") or {}).get(REVISION, default))


def _replicas(rs: Obj) -> int:
    return int(rs["spec"].get("replicas", 0))


def reconcile_deployments(kit: Kit) -> None:
    d_rt, rs_rt = kit.rt(DEPLOYMENTS), kit.rt(REPLICASETS)
    for d in kit.ops.store.objects_of(d_rt.key):
        if not terminating(d):
            _reconcile(kit, d_rt, rs_rt, d)


def _reconcile(kit: Kit, d_rt: ResourceType, rs_rt: ResourceType, d: Obj) -> None:
    spec = d.get("spec") or {}
    desired = int(spec.get("replicas", 1))
    h = pod_template_hash(spec.get("template") or {})
    owned = kit.adopt(rs_rt, d, "Deployment", spec.get("selector"))
    new_rs = next(
        (rs for rs in owned if (rs["metadata"].get("labels") or {}).get("pod-template-hash") == h),
        None,
    )
    if new_rs is None:
        revision = max((_revision(rs, "0") for rs in owned), default=0) + 1
        new_rs = _create_replicaset(kit, d_rt, rs_rt, d, h, revision)
        if new_rs is None:
            return
        owned.append(new_rs)
    else:
        revision = _revision(new_rs, "1")
        _scale_new(kit, d_rt, rs_rt, d, new_rs, desired)
    _scale_old(kit, d_rt, rs_rt, d, owned, new_rs, desired)
    d = _annotate_revision(kit, d_rt, d, revision)
    _write_status(kit, d_rt, d, owned, new_rs, desired)


def _create_replicaset(
    kit: Kit, d_rt: ResourceType, rs_rt: ResourceType, d: Obj, h: str, revision: int
) -> Obj | None:
    md, spec = d["metadata"], d.get("spec") or {}
    desired = int(spec.get("replicas", 1))
    tmpl = copy.deepcopy(spec.get("template") or {})
    tmpl.setdefault("metadata", {}).setdefault("labels", {})["pod-template-hash"] = h
    selector = copy.deepcopy(spec.get("selector") or {})
    selector.setdefault("matchLabels", {})["pod-template-hash"] = h
    body = {
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "metadata": {
            "name": f"{md['name']}-{h}",
            "namespace": md["namespace"],
            "labels": dict(tmpl["metadata"]["labels"]),
            "annotations": {
                DESIRED: str(desired),
                "deployment.kubernetes.io/max-replicas": str(desired + 1),
                REVISION: str(revision),
            },
            "ownerReferences": [owner_ref("Deployment", "apps/v1", d)],
        },
        "spec": {
            "replicas": desired,
            "minReadySeconds": spec.get("minReadySeconds", 0),
            "selector": selector,
            "template": tmpl,
        },
    }
    new_rs = kit.create("create replicaset", rs_rt, md["namespace"], body)
    if new_rs is not None and desired > 0:
        _scaling_event(kit, d_rt, d, new_rs["metadata"]["name"], 0, desired)
    return new_rs


def _scale_new(
    kit: Kit, d_rt: ResourceType, rs_rt: ResourceType, d: Obj, new_rs: Obj, desired: int
) -> None:
    if new_rs["spec"].get("replicas") == desired:
        return
    upd = copy.deepcopy(new_rs)
    upd["spec"]["replicas"] = desired
    upd["metadata"].setdefault("annotations", {})[DESIRED] = str(desired)
    if kit.update("scale replicaset", rs_rt, upd):
        _scaling_event(kit, d_rt, d, upd["metadata"]["name"], _replicas(new_rs), desired)


def _scale_old(
    kit: Kit,
    d_rt: ResourceType,
    rs_rt: ResourceType,
    d: Obj,
    owned: list[Obj],
    new_rs: Obj,
    desired: int,
) -> None:
    """The old ReplicaSets keep as many Pods as the new one still lacks Ready ones (newest
    revision first); none under `Recreate`."""
    recreate = ((d.get("spec") or {}).get("strategy") or {}).get("type") == "Recreate"
    new_ready = int((new_rs.get("status") or {}).get("readyReplicas", 0))
    budget = 0 if recreate else max(0, desired - new_ready)
    old = sorted(
        (rs for rs in owned if rs["metadata"]["name"] != new_rs["metadata"]["name"]),
        key=lambda r: _revision(r, "0"),
        reverse=True,
    )
    for rs in old:
        want = min(_replicas(rs), budget)
        budget -= want
        if rs["spec"].get("replicas") != want:
            upd = copy.deepcopy(rs)
            upd["spec"]["replicas"] = want
            if kit.update("scale old replicaset", rs_rt, upd):
                _scaling_event(kit, d_rt, d, rs["metadata"]["name"], _replicas(rs), want)


def _annotate_revision(kit: Kit, d_rt: ResourceType, d: Obj, revision: int) -> Obj:
    if (d["metadata"].get("annotations") or {}).get(REVISION) == str(revision):
        return d
    upd = copy.deepcopy(d)
    upd["metadata"].setdefault("annotations", {})[REVISION] = str(revision)
    return kit.update("annotate deployment", d_rt, upd) or d


def _scaling_event(kit: Kit, d_rt: ResourceType, d: Obj, rs_name: str, was: int, now: int) -> None:
    direction = "up" if now > was else "down"
    message = f"Scaled {direction} replica set {rs_name} from {was} to {now}"
    kit.event(d_rt, d, "ScalingReplicaSet", message, COMPONENT)


# --- status ------------------------------------------------------------------------------------


def _st(rs: Obj, f: str) -> int:
    return int((rs.get("status") or {}).get(f, 0))


def _write_status(
    kit: Kit, d_rt: ResourceType, d: Obj, owned: list[Obj], new_rs: Obj, desired: int
) -> None:
    store = kit.ops.store
    fresh = [
        store.peek(REPLICASETS, rs["metadata"]["namespace"], rs["metadata"]["name"]) for rs in owned
    ]
    live = [rs for rs in fresh if rs is not None]
    new_live = next(
        (rs for rs in live if rs["metadata"]["name"] == new_rs["metadata"]["name"]), new_rs
    )
    replicas = sum(_st(rs, "replicas") for rs in live)
    available = sum(_st(rs, "availableReplicas") for rs in live)
    status: Obj = {
        "observedGeneration": d["metadata"].get("generation", 1),
        "replicas": replicas,
        "updatedReplicas": _st(new_live, "replicas"),
        "readyReplicas": sum(_st(rs, "readyReplicas") for rs in live),
        "availableReplicas": available,
    }
    if desired - available > 0:
        status["unavailableReplicas"] = desired - available
    status = {k: v for k, v in status.items() if v != 0 or k == "observedGeneration"}
    done = (
        _st(new_live, "replicas") == desired
        and _st(new_live, "availableReplicas") == desired
        and replicas == desired
    )
    old_status = d.get("status") or {}
    status["conditions"] = _conditions(
        list(old_status.get("conditions") or []), available >= desired, done, new_rs
    )
    if status != old_status:
        new = copy.deepcopy(d)
        new["status"] = status
        kit.update("deployment status", d_rt, new, subresource="status")


def _conditions(conds: list[Obj], avail_ok: bool, done: bool, new_rs: Obj) -> list[Obj]:
    now = utcnow()
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
    return _set_condition(
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
