"""The four PATCH flavours: JSON merge (RFC 7386), JSON patch (RFC 6902), strategic merge, apply.

Strategic merge is implemented for the fields of the built-in kinds this emulator serves: the
lists that Kubernetes' Go types tag with `patchStrategy=merge` are merged by their merge key
(`MERGE_KEYS`), `metadata.finalizers` is a merged set of strings, every other list is replaced.
Directives understood: `$patch: replace|delete|merge`, `$retainKeys`,
`$deleteFromPrimitiveList/<f>`, `$setElementOrder/<f>`.  Not implemented: merge keys that
depend on the parent type beyond the field name (good enough for Pod, Deployment, ReplicaSet).
"""

from __future__ import annotations

import copy
from typing import Any

import jsonpatch

from shared.api.meta import Obj

from . import errors

# field name -> merge key, for lists Kubernetes types declare `patchStrategy:"merge"`.
MERGE_KEYS: dict[str, str] = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "env": "name",
    "ports": "containerPort",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "volumeDevices": "devicePath",
    "imagePullSecrets": "name",
    "ownerReferences": "uid",
    "conditions": "type",
    "hostAliases": "ip",
    "topologySpreadConstraints": "topologyKey",
    "resourceClaims": "name",
    "schedulingGates": "name",
}
# lists of strings merged as sets
PRIMITIVE_MERGE_LISTS = {"finalizers"}


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: objects merge recursively, null deletes, everything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            result.pop(k, None)
        else:
            result[k] = merge_patch(result.get(k), v)
    return result


def json_patch(target: Obj, ops: Any) -> Obj:
    if not isinstance(ops, list):
        raise errors.bad_request(
            "json: cannot unmarshal object into Go value of type jsonpatch.Patch"
        )
    try:
        patch = jsonpatch.JsonPatch(ops)
    except (jsonpatch.InvalidJsonPatch, TypeError) as exc:
        raise errors.bad_request(str(exc)) from exc
    try:
        result = patch.apply(copy.deepcopy(target))
    except jsonpatch.JsonPatchTestFailed as exc:
        raise errors.ApiError(
            422, "Invalid", f"the server rejected our request due to an error in our request: {exc}"
        ) from exc
    except (
        jsonpatch.JsonPatchConflict,
        jsonpatch.JsonPointerException,
        jsonpatch.JsonPatchException,
    ) as exc:
        raise errors.ApiError(
            422, "Invalid", f"the server rejected our request due to an error in our request: {exc}"
        ) from exc
    if not isinstance(result, dict):
        raise errors.bad_request("the patch did not produce an object")
    return result


def strategic_merge_patch(target: Any, patch: Any) -> Any:
    return _smp(target, patch, None)


def _smp(target: Any, patch: Any, field_name: str | None) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    directive = patch.get("$patch")
    if directive == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if k != "$patch"}
    if directive == "delete":
        return None
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    retain = patch.get("$retainKeys")
    orders: dict[str, list[Any]] = {}
    for k, v in patch.items():
        if k in ("$patch", "$retainKeys"):
            continue
        if k.startswith("$setElementOrder/"):
            orders[k.split("/", 1)[1]] = v
            continue
        if k.startswith("$deleteFromPrimitiveList/"):
            name = k.split("/", 1)[1]
            if isinstance(result.get(name), list):
                result[name] = [x for x in result[name] if x not in v]
            continue
        if v is None:
            result.pop(k, None)
            continue
        if isinstance(v, list):
            result[k] = _merge_list(result.get(k), v, k)
        elif isinstance(v, dict):
            merged = _smp(result.get(k), v, k)
            if merged is None:
                result.pop(k, None)
            else:
                result[k] = merged
        else:
            result[k] = copy.deepcopy(v)
    for name, order in orders.items():
        if isinstance(result.get(name), list):
            result[name] = _apply_order(result[name], order, name)
    if isinstance(retain, list):
        result = {k: v for k, v in result.items() if k in retain}
    return result


def _merge_list(current: Any, patch: list[Any], field_name: str) -> list[Any]:
    if field_name in PRIMITIVE_MERGE_LISTS and all(not isinstance(x, dict) for x in patch):
        out = list(current) if isinstance(current, list) else []
        for x in patch:
            if x not in out:
                out.append(x)
        return out
    key = MERGE_KEYS.get(field_name)
    if key is None or not all(isinstance(x, dict) for x in patch):
        # A `$patch: replace` marker inside a list replaces it; otherwise a plain replace.
        return [
            copy.deepcopy(x)
            for x in patch
            if not (isinstance(x, dict) and x.get("$patch") == "replace")
        ]
    out = [copy.deepcopy(x) for x in current] if isinstance(current, list) else []
    if any(isinstance(x, dict) and x.get("$patch") == "replace" for x in patch):
        return [copy.deepcopy(x) for x in patch if x.get("$patch") != "replace"]
    for item in patch:
        if key not in item:
            out.append(copy.deepcopy(item))
            continue
        idx = next(
            (i for i, cur in enumerate(out) if isinstance(cur, dict) and cur.get(key) == item[key]),
            None,
        )
        if item.get("$patch") == "delete":
            if idx is not None:
                out.pop(idx)
            continue
        if idx is None:
            out.append(_smp({}, item, None))
        else:
            out[idx] = _smp(out[idx], item, None)
    return out


def _apply_order(items: list[Any], order: list[Any], field_name: str) -> list[Any]:
    key = MERGE_KEYS.get(field_name)

    def ident(x: Any) -> Any:
        if key and isinstance(x, dict):
            return x.get(key)
        return x

    wanted = [o.get(key) if key and isinstance(o, dict) else o for o in order]
    ranked = sorted(
        enumerate(items),
        key=lambda p: wanted.index(ident(p[1])) if ident(p[1]) in wanted else len(wanted) + p[0],
    )
    return [x for _, x in ranked]


# --- server-side apply ------------------------------------------------------------------------
# Field sets in the FieldsV1 shape ("f:spec": {"f:replicas": {}}, "k:{\"name\":\"x\"}": {...}).


def _assoc_key(field_name: str, item: Any) -> str | None:
    key = MERGE_KEYS.get(field_name)
    if key and isinstance(item, dict) and key in item:
        import json

        return "k:" + json.dumps({key: item[key]}, separators=(",", ":"))
    return None


def field_set(obj: Any) -> dict[str, Any]:
    """The FieldsV1 set of the leaves and associative-list entries that `obj` specifies."""
    out: dict[str, Any] = {}
    if not isinstance(obj, dict):
        return out
    for k, v in obj.items():
        if k in ("apiVersion", "kind"):
            continue
        if isinstance(v, dict) and v:
            out[f"f:{k}"] = field_set(v)
        elif isinstance(v, list) and v and all(_assoc_key(k, x) for x in v):
            out[f"f:{k}"] = {str(_assoc_key(k, x)): {".": {}, **field_set(x)} for x in v}
        else:
            out[f"f:{k}"] = {}
    if "metadata" in obj and isinstance(obj["metadata"], dict):
        md = out.get("f:metadata", {})
        for skip in (
            "f:name",
            "f:namespace",
            "f:resourceVersion",
            "f:uid",
            "f:creationTimestamp",
            "f:generation",
            "f:managedFields",
        ):
            md.pop(skip, None)
        if md:
            out["f:metadata"] = md
        else:
            out.pop("f:metadata", None)
    return out


def apply_merge(live: Any, config: Any, field_name: str | None = None) -> Any:
    """Merge an applied configuration into the live object: maps recurse, associative lists
    merge by key, other lists and scalars are replaced."""
    if isinstance(config, dict):
        base = copy.deepcopy(live) if isinstance(live, dict) else {}
        for k, v in config.items():
            if v is None:
                base.pop(k, None)
            else:
                base[k] = apply_merge(base.get(k), v, k)
        return base
    if isinstance(config, list) and field_name and all(_assoc_key(field_name, x) for x in config):
        current = live if isinstance(live, list) else []
        by_key = {_assoc_key(field_name, x): x for x in current}
        merged = [apply_merge(by_key.get(_assoc_key(field_name, x)), x, None) for x in config]
        applied = {_assoc_key(field_name, x) for x in config}
        # entries owned by others stay, after the applied ones (order of the applier first)
        merged.extend(copy.deepcopy(x) for x in current if _assoc_key(field_name, x) not in applied)
        return merged
    return copy.deepcopy(config)


def remove_fields(obj: Any, fields: dict[str, Any], field_name: str | None = None) -> Any:
    """Remove from `obj` every leaf named in `fields` (a FieldsV1 set)."""
    if isinstance(obj, dict):
        out = dict(obj)
        for fk, sub in fields.items():
            if not fk.startswith("f:"):
                continue
            name = fk[2:]
            if name not in out:
                continue
            if sub and (isinstance(out[name], dict | list)):
                out[name] = remove_fields(out[name], sub, name)
                if out[name] in ({}, []):
                    del out[name]
            else:
                del out[name]
        return out
    if isinstance(obj, list) and field_name:
        out_list = []
        for item in obj:
            k = _assoc_key(field_name, item)
            if k is not None and k in fields:
                sub = {f: v for f, v in fields[k].items() if f != "."}
                if "." in fields[k] and not sub:
                    continue
                if "." in fields[k]:
                    continue
                out_list.append(remove_fields(item, sub, None))
            else:
                out_list.append(item)
        return out_list
    return obj


def subtract(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Field set a minus b (leaves of a not in b). A leaf of b does not cover its children in a:
    applying `labels: {}` owns the empty map, not the keys applied before."""
    out: dict[str, Any] = {}
    for k, v in a.items():
        if k not in b:
            out[k] = v
        elif v:
            rest = subtract(v, b[k])
            if rest:
                out[k] = rest
    return out


def leaves(fs: dict[str, Any], prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out: list[tuple[str, ...]] = []
    for k, v in fs.items():
        if k == ".":
            continue
        path = (*prefix, k)
        sub = {x: y for x, y in v.items() if x != "."}
        if sub:
            out.extend(leaves(sub, path))
        else:
            out.append(path)
    return out


def value_at(obj: Any, path: tuple[str, ...]) -> tuple[bool, Any]:
    import json

    cur = obj
    field_name = None
    for p in path:
        if p.startswith("f:"):
            field_name = p[2:]
            if not isinstance(cur, dict) or field_name not in cur:
                return False, None
            cur = cur[field_name]
        elif p.startswith("k:"):
            want = json.loads(p[2:])
            if not isinstance(cur, list):
                return False, None
            match = [
                x
                for x in cur
                if isinstance(x, dict) and all(x.get(kk) == vv for kk, vv in want.items())
            ]
            if not match:
                return False, None
            cur = match[0]
    return True, cur


def _has_path(fs: dict[str, Any], path: tuple[str, ...]) -> bool:
    node = fs
    for p in path:
        if not isinstance(node, dict) or p not in node:
            return False
        node = node[p]
    return True


def remove_paths(fs: dict[str, Any], paths: list[tuple[str, ...]]) -> dict[str, Any]:
    """`fs` without `paths` (and the parents left empty): a new set, or `fs` itself when it
    holds none of them (field sets are never changed in place)."""
    if not any(_has_path(fs, path) for path in paths):
        return fs
    out = copy.deepcopy(fs)
    for path in paths:
        node = out
        parents = []
        for p in path[:-1]:
            if p not in node:
                break
            parents.append((node, p))
            node = node[p]
        else:
            node.pop(path[-1], None)
            for parent, p in reversed(parents):
                rest = {x: y for x, y in parent[p].items() if x != "."}
                if not rest and "." not in parent[p]:
                    parent.pop(p)
    return out
