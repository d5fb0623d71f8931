"""The ReplicaSet controller: a ReplicaSet keeps `spec.replicas` active Pods (generateName
`<rs>-`, labels and annotations from the template, a controller ownerRef), creating the missing
ones and deleting the surplus (not-ready first, then the newest), and its status counts them.

Not emulated: slow-start batches, expectations, minReadySeconds.
"""

from __future__ import annotations

import copy

from devstack.kubeapi import selectors
from devstack.kubeapi.resources import ResourceType
from shared.api.meta import Obj

from .base import Kit, controller_of, owner_ref, pod_ready, terminating

REPLICASETS = "apps/replicasets"
PODS = "/pods"
COMPONENT = "replicaset-controller"


def reconcile_replicasets(kit: Kit) -> None:
    rs_rt, pod_rt = kit.rt(REPLICASETS), kit.rt(PODS)
    for rs in kit.ops.store.objects_of(rs_rt.key):
        if terminating(rs):
            continue
        spec = rs.get("spec") or {}
        desired = int(spec.get("replicas", 1))
        pods = kit.adopt(pod_rt, rs, "ReplicaSet", spec.get("selector"))
        active = [
            p
            for p in pods
            if not terminating(p)
            and (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed")
        ]
        if len(active) < desired:
            _create_pods(kit, rs_rt, pod_rt, rs, desired - len(active))
        elif len(active) > desired:
            _delete_pods(kit, rs_rt, pod_rt, rs, active, len(active) - desired)
        _write_status(kit, rs_rt, pod_rt, rs)


def _pod_body(rs: Obj) -> Obj:
    md = rs["metadata"]
    template = (rs.get("spec") or {}).get("template") or {}
    tmd = template.get("metadata") or {}
    body: Obj = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": f"{md['name']}-",
            "namespace": md["namespace"],
            "labels": dict(tmd.get("labels") or {}),
            "ownerReferences": [owner_ref("ReplicaSet", "apps/v1", rs)],
        },
        "spec": copy.deepcopy(template.get("spec") or {}),
    }
    if tmd.get("annotations"):
        body["metadata"]["annotations"] = dict(tmd["annotations"])
    return body


def _create_pods(kit: Kit, rs_rt: ResourceType, pod_rt: ResourceType, rs: Obj, n: int) -> None:
    for _ in range(n):
        pod = kit.create("create pod", pod_rt, rs["metadata"]["namespace"], _pod_body(rs))
        if pod is None:
            break
        message = f"Created pod: {pod['metadata']['name']}"
        kit.event(rs_rt, rs, "SuccessfulCreate", message, COMPONENT)


def _delete_pods(
    kit: Kit, rs_rt: ResourceType, pod_rt: ResourceType, rs: Obj, active: list[Obj], n: int
) -> None:
    # not-ready pods go first, then the newest (as the ReplicaSet controller ranks them)
    doomed = sorted(
        active,
        key=lambda p: (pod_ready(p), [-ord(c) for c in p["metadata"]["creationTimestamp"]]),
    )
    for p in doomed[:n]:
        if kit.delete("delete pod", pod_rt, p, None):
            message = f"Deleted pod: {p['metadata']['name']}"
            kit.event(rs_rt, rs, "SuccessfulDelete", message, COMPONENT)


def _write_status(kit: Kit, rs_rt: ResourceType, pod_rt: ResourceType, rs: Obj) -> None:
    md = rs["metadata"]
    sel = selectors.selector_from_label_selector((rs.get("spec") or {}).get("selector"))
    live = [
        p
        for p in kit.ops.store.objects_of(pod_rt.key, md["namespace"])
        if controller_of(p) == md["uid"] and not terminating(p)
    ]
    ready = sum(1 for p in live if pod_ready(p))
    status: Obj = {
        "replicas": len(live),
        "fullyLabeledReplicas": sum(1 for p in live if selectors.labels_match(sel, p)),
        "readyReplicas": ready,
        "availableReplicas": ready,
        "observedGeneration": md.get("generation", 1),
    }
    status = {k: v for k, v in status.items() if v != 0 or k in ("replicas", "observedGeneration")}
    if status != (rs.get("status") or {}):
        new = copy.deepcopy(rs)
        new["status"] = status
        kit.update("replicaset status", rs_rt, new, subresource="status")
