"""Namespace lifecycle and CRD cleanup: a Terminating namespace has its contents deleted, then
goes (its `kubernetes` finalizer dropped); a deleted CRD has its custom resources deleted, then
goes (its cleanup finalizer dropped). Both are the same two steps: delete what is inside, and
once nothing is left, release the container.

Not here: how the namespace or CRD came to be Terminating (a delete, deletion.py).
"""

from __future__ import annotations

import copy

from devstack.kubeapi import crds

from .base import Kit, terminating

NAMESPACES = "/namespaces"
CRDS = "apiextensions.k8s.io/customresourcedefinitions"


def reconcile_namespaces(kit: Kit) -> None:
    ns_rt = kit.rt(NAMESPACES)
    for ns in kit.ops.store.objects_of(ns_rt.key):
        if not terminating(ns):
            continue
        name = ns["metadata"]["name"]
        remaining = 0
        for rt in kit.ops.registry.all():
            if not rt.namespaced:
                continue
            for o in kit.ops.store.objects_of(rt.key, name):
                remaining += 1
                if not terminating(o):
                    kit.delete("namespace cleanup", rt, o, {"propagationPolicy": "Background"})
        if remaining == 0 and (ns.get("spec") or {}).get("finalizers"):
            new = copy.deepcopy(ns)
            new["spec"]["finalizers"] = []
            kit.update("namespace finalize", ns_rt, new, from_patch=True)


def reconcile_crds(kit: Kit) -> None:
    crd_rt = kit.rt(CRDS)
    for crd in kit.ops.store.objects_of(crd_rt.key):
        md = crd["metadata"]
        if not terminating(crd) or crds.CLEANUP_FINALIZER not in (md.get("finalizers") or []):
            continue
        spec = crd["spec"]
        rt = kit.ops.registry.by_key(f"{spec['group']}/{spec['names']['plural']}")
        items = kit.ops.store.objects_of(rt.key) if rt else []
        for o in items:
            if rt is not None and not terminating(o):
                kit.delete("crd cleanup", rt, o, None)
        if not items:
            kit.drop_finalizer("crd finalize", crd_rt, crd, crds.CLEANUP_FINALIZER)
