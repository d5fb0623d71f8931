"""The `scale` subresource: an object seen as an `autoscaling/v1` Scale (replicas at the kind's
paths: `spec.replicas` and `status.replicas` for built-in kinds, a CRD's `specReplicasPath`,
`statusReplicasPath` and `labelSelectorPath` for custom resources), and a Scale written back as
a change of the object's replicas.

Not here: reading the request (server.py) or storing the object (operations.py).
"""

from __future__ import annotations

import copy
from typing import Any

from shared.api.meta import Obj

from . import errors, patching, selectors, tables
from .operations import APPLY_PATCH, JSON_PATCH
from .resources import ResourceType


def _paths(rt: ResourceType, version: str) -> tuple[str, str, str | None]:
    """(spec replicas path, status replicas path, label selector path), without leading dots."""
    if rt.builtin:
        return "spec.replicas", "status.replicas", None
    sc = rt.version_subresources.get(version, {}).get("scale", {})
    return (
        sc.get("specReplicasPath", ".spec.replicas").lstrip("."),
        sc.get("statusReplicasPath", ".status.replicas").lstrip("."),
        sc.get("labelSelectorPath"),
    )


def to_scale(rt: ResourceType, version: str, o: Obj) -> Obj:
    md = o["metadata"]
    spec_path, status_path, sel_path = _paths(rt, version)
    selector = ""
    if rt.builtin:
        selector = selectors.format_label_selector((o.get("spec") or {}).get("selector")).replace(
            "<none>", ""
        )
    elif sel_path:
        found = tables.jsonpath(o, sel_path)
        selector = found[0] if found and isinstance(found[0], str) else ""
    spec_val = tables.jsonpath(o, "." + spec_path)
    status_val = tables.jsonpath(o, "." + status_path)
    return {
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            k: md[k]
            for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
            if k in md
        },
        "spec": {"replicas": spec_val[0] if spec_val else 0},
        "status": {
            "replicas": status_val[0] if status_val else 0,
            **({"selector": selector} if selector else {}),
        },
    }


def patch_scale(scale: Obj, content_type: str, patch: Any) -> Any:
    """A Scale patched: JSON patch, apply, else merge patch."""
    if content_type == JSON_PATCH:
        return patching.json_patch(scale, patch)
    if content_type == APPLY_PATCH:
        return patching.apply_merge(scale, patch)
    return patching.merge_patch(scale, patch)


def scaled(rt: ResourceType, version: str, obj: Obj, new_scale: Any) -> Obj:
    """A copy of `obj` (as served) with the replicas the Scale asks for; a stale
    resourceVersion is a 409 and a negative or missing replica count a 422."""
    name = obj["metadata"]["name"]
    rv = ((new_scale or {}).get("metadata") or {}).get("resourceVersion")
    if rv and rv != obj["metadata"]["resourceVersion"]:
        raise errors.conflict(rt.plural, rt.group, name)
    replicas = ((new_scale or {}).get("spec") or {}).get("replicas")
    if not isinstance(replicas, int) or replicas < 0:
        cause = errors.Cause(
            "FieldValueInvalid",
            f"Invalid value: {replicas}: must be greater than or equal to 0",
            "spec.replicas",
        )
        raise errors.invalid("Scale", "autoscaling", name, [cause])
    spec_path, _, _ = _paths(rt, version)
    out = copy.deepcopy(obj)  # ops.get shares the stored object's parts
    node = out
    keys = spec_path.split(".")
    for k in keys[:-1]:
        node = node.setdefault(k, {})
    node[keys[-1]] = replicas
    return out
