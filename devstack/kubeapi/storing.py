"""The end of a write: dry run, or storage and what follows it (a CRD's kind served or no
longer served); an update that changes nothing is not stored, and the update that empties a
terminating object's finalizers is its deletion.

Not here: the checks before (writes.py).
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING

from shared.api.meta import Obj

from . import crds
from .resources import ResourceType

if TYPE_CHECKING:
    from .operations import Operations
    from .writes import Write


def store_created(ops: Operations, w: Write) -> Obj:
    rt = w.rt
    if w.ctx.dry_run:
        out = copy.deepcopy(w.new)
        out["metadata"].pop("resourceVersion", None)
        return ops.render(rt, w.version, out)
    stored = ops.store.create(rt.key, w.new)  # shared: rendered for reading only
    _register(ops, rt, stored)
    return ops.render(rt, w.version, stored, shared=True)


def store_updated(ops: Operations, w: Write) -> Obj:
    """An update that changes nothing is not stored; the update that empties the finalizers of
    a terminating object is its deletion."""
    rt, new, md = w.rt, w.new, w.md
    if unchanged(new, w.stored):
        return ops.render(rt, w.version, w.stored, shared=True)
    if w.ctx.dry_run:
        return ops.render(rt, w.version, new, shared=True)
    if (
        md.get("deletionTimestamp")
        and not md.get("deletionGracePeriodSeconds")
        and not md.get("finalizers")
        and not spec_finalizers(rt, new)
    ):
        # Not while a grace period runs: a terminating Pod's status writes keep it. Watchers
        # see one DELETED event (with the last stored state, as etcd's delete returns it); the
        # caller gets the object it asked for, at the deletion's RV.
        gone = ops.store.delete(rt.key, w.scope, w.name)
        after_delete(ops, rt, gone)
        md["resourceVersion"] = gone["metadata"]["resourceVersion"]
        return ops.render(rt, w.version, new, shared=True)
    stored = ops.store.update(rt.key, new)  # shared: rendered for reading only
    _register(ops, rt, stored)
    return ops.render(rt, w.version, stored, shared=True)


def _register(ops: Operations, rt: ResourceType, stored: Obj) -> None:
    """A stored CRD serves its kind (again, with its new versions and schemas)."""
    if rt.kind == "CustomResourceDefinition" and rt.builtin:
        ops.registry.add(crds.resource_type(stored))


def after_delete(ops: Operations, rt: ResourceType, gone: Obj) -> None:
    """A deleted CRD's kind is served no more."""
    if rt.builtin and rt.kind == "CustomResourceDefinition":
        spec = gone.get("spec") or {}
        ops.registry.remove(f"{spec.get('group')}/{(spec.get('names') or {}).get('plural')}")


def spec_finalizers(rt: ResourceType, obj: Obj) -> list[str]:
    """A Namespace's `spec.finalizers`, which hold its deletion as `metadata.finalizers` do."""
    if rt.kind == "Namespace" and rt.builtin:
        return list((obj.get("spec") or {}).get("finalizers") or [])
    return []


def unchanged(new: Obj, old: Obj) -> bool:
    """Whether an update would store nothing new: equal but for resourceVersion and the times of
    managedFields entries (ownership changes are writes, timestamps alone are not). Compared in
    place, without copies: this runs on every update."""
    if new.keys() != old.keys():
        return False
    if any(new[k] != old[k] for k in new if k != "metadata"):
        return False
    nmd, omd = new.get("metadata") or {}, old.get("metadata") or {}
    skip = ("resourceVersion", "managedFields")
    if {k for k in nmd if k not in skip} != {k for k in omd if k not in skip}:
        return False
    if any(nmd[k] != omd[k] for k in nmd if k not in skip):
        return False
    nmf, omf = nmd.get("managedFields") or [], omd.get("managedFields") or []
    return len(nmf) == len(omf) and all(
        a.keys() - {"time"} == b.keys() - {"time"} and all(a[k] == b[k] for k in a if k != "time")
        for a, b in zip(nmf, omf, strict=True)
    )
