"""`metadata.managedFields`: who owns which field, and server-side apply conflicts.

A simplified structured-merge-diff: field sets are FieldsV1 trees (see `patching.field_set`);
an Update gives its manager the fields it changed and takes them from everyone else; an Apply
gives its manager exactly the fields of its configuration.  An Apply that changes the value of
a field another manager owns is a 409 Conflict unless `force=true`, which takes ownership.
Not implemented: per-version field-set conversion, `x-kubernetes-list-type` semantics beyond
the merge keys of `patching.MERGE_KEYS`.
"""

from __future__ import annotations

import copy
import json
from typing import Any

from shared.api.meta import Obj

from . import errors, patching

Entry = dict[str, Any]
IGNORED_TOP = ("f:status",)
LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"
UPGRADING_MANAGER = "kubectl"
"""The only manager whose server-side applies upgrade from client-side apply (kube's choice:
other managers opt out by their name)."""


def _object_fields(obj: Obj, subresource: str | None) -> dict[str, Any]:
    fs = patching.field_set(obj)
    return _only_status(fs) if subresource == "status" else fs


def _only_status(fs: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in fs.items() if k == "f:status"}


def render_path(path: tuple[str, ...]) -> str:
    out = ""
    for p in path:
        if p.startswith("f:"):
            out += "." + p[2:]
        elif p.startswith("k:"):
            key = json.loads(p[2:])
            out += "[" + ",".join(f"{k}={json.dumps(v)}" for k, v in key.items()) + "]"
    return out


def _find(
    entries: list[Entry], manager: str, operation: str, subresource: str | None
) -> Entry | None:
    for e in entries:
        if (
            e.get("manager") == manager
            and e.get("operation") == operation
            and e.get("subresource") == subresource
        ):
            return e
    return None


def _entry(
    manager: str,
    operation: str,
    api_version: str,
    now: str,
    subresource: str | None,
    fs: dict[str, Any],
) -> Entry:
    e: Entry = {
        "manager": manager,
        "operation": operation,
        "apiVersion": api_version,
        "time": now,
        "fieldsType": "FieldsV1",
        "fieldsV1": fs,
    }
    if subresource:
        e["subresource"] = subresource
    return e


def _union(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(a)
    for k, v in b.items():
        out[k] = _union(out.get(k, {}), v) if k in out else copy.deepcopy(v)
    return out


def _status_part(obj: Obj | None) -> Obj | None:
    if obj is None:
        return None
    return {"status": obj["status"]} if "status" in obj else {}


def record_update(
    entries: list[Entry] | None,
    *,
    manager: str,
    api_version: str,
    now: str,
    old: Obj | None,
    new: Obj,
    subresource: str | None,
) -> list[Entry]:
    # Each entry dict is copied; their field sets are replaced below, never changed in place
    # (remove_paths and _union build new ones).
    entries = [dict(e) for e in entries or []]
    if subresource == "status":
        # A status write changes nothing but the status (`operations.update` takes the rest
        # from the stored object), and field sets are per top-level field: the status alone.
        new_part, old_part = _status_part(new), _status_part(old)
    else:
        new_part, old_part = new, old
    new_fs = patching.field_set(new_part)
    changed = [
        leaf
        for leaf in patching.leaves(new_fs)
        if old is None or patching.value_at(old, leaf) != patching.value_at(new, leaf)
    ]
    gone = []
    if old_part is not None:
        present = set(patching.leaves(new_fs))
        gone = [
            leaf for leaf in patching.leaves(patching.field_set(old_part)) if leaf not in present
        ]
    if not changed and not gone:
        return entries
    out: list[Entry] = []
    for e in entries:
        fs = patching.remove_paths(e.get("fieldsV1", {}), changed + gone)
        if fs:
            e["fieldsV1"] = fs
            out.append(e)
    if changed:
        mine = _find(out, manager, "Update", subresource)
        changed_fs: dict[str, Any] = {}
        for leaf in changed:
            node = changed_fs
            for p in leaf:
                node = node.setdefault(p, {})
        if mine is None:
            out.append(_entry(manager, "Update", api_version, now, subresource, changed_fs))
        else:
            mine["fieldsV1"] = _union(mine["fieldsV1"], changed_fs)
            mine["time"] = now
            mine["apiVersion"] = api_version
    return out


def apply(
    live: Obj | None,
    config: Obj,
    *,
    manager: str,
    api_version: str,
    now: str,
    force: bool,
    subresource: str | None,
) -> tuple[Obj, list[Entry]]:
    """Server-side apply of `config` onto `live`: the merged object and its managedFields."""
    entries = copy.deepcopy((live or {}).get("metadata", {}).get("managedFields") or [])
    mine = _find(entries, manager, "Apply", subresource)
    prev_fs = mine["fieldsV1"] if mine else {}
    new_fs = _object_fields(config, subresource)
    if subresource == "status":
        config = {
            "apiVersion": config.get("apiVersion"),
            "kind": config.get("kind"),
            "metadata": config.get("metadata", {}),
            "status": config.get("status", {}),
        }
    others = [e for e in entries if e is not mine]
    conflicts = _conflicts(live, config, others, new_fs)
    if conflicts and not force and manager == UPGRADING_MANAGER and live is not None:
        # lastAppliedManager: kubectl's first server-side apply may take over the fields that
        # its client-side applies recorded and that nobody has changed since
        allowed = _unchanged_since_last_applied(live)
        conflicts_left = [(leaf, e) for leaf, e in conflicts if leaf not in allowed]
        force = not conflicts_left
        conflicts = conflicts if force else conflicts_left
    if conflicts and not force:
        raise _conflict_error(conflicts)
    if conflicts:
        taken = [leaf for leaf, _ in conflicts]
        for e in others:
            e["fieldsV1"] = patching.remove_paths(e.get("fieldsV1", {}), taken)
    merged = _drop_unapplied(patching.apply_merge(live or {}, config), prev_fs, new_fs, others)
    entries = [e for e in others if e.get("fieldsV1")]
    entries.append(_entry(manager, "Apply", api_version, now, subresource, new_fs))
    if manager == UPGRADING_MANAGER and subresource is None and _last_applied(merged) is not None:
        # lastAppliedUpdater: keep the annotation in step, for a later client-side apply
        merged["metadata"]["annotations"][LAST_APPLIED] = _build_last_applied(config)
    return merged, entries


Conflict = tuple[tuple[str, ...], Entry]
"""A field (leaf path) the configuration changes and another manager's entry owns."""


def _conflicts(live: Obj | None, config: Obj, others: list[Entry], new_fs: Obj) -> list[Conflict]:
    if live is None:
        return []
    conflicts: list[Conflict] = []
    for e in others:
        owned = set(patching.leaves(e.get("fieldsV1", {})))
        conflicts.extend(
            (leaf, e)
            for leaf in patching.leaves(new_fs)
            if leaf in owned and patching.value_at(live, leaf) != patching.value_at(config, leaf)
        )
    return conflicts


def _conflict_error(conflicts: list[Conflict]) -> errors.ApiError:
    causes = [
        errors.Cause(
            "FieldManagerConflict",
            f'conflict with "{e["manager"]}"'
            + (f" using {e['apiVersion']}" if e.get("apiVersion") else ""),
            render_path(leaf),
        )
        for leaf, e in conflicts
    ]
    n = len(causes)
    lines = "\n".join(f"- {c.message}: {c.field}" for c in causes)
    return errors.apply_conflict(
        causes,
        f"Apply failed with {n} conflict{'s' if n != 1 else ''}: "
        + (f"{causes[0].message}: {causes[0].field}" if n == 1 else "\n" + lines),
    )


def _drop_unapplied(merged: Obj, prev_fs: Obj, new_fs: Obj, others: list[Entry]) -> Obj:
    """Fields this manager applied before and no longer applies are removed, unless another
    manager also owns them."""
    dropped = patching.subtract(prev_fs, new_fs)
    if not dropped:
        return merged
    owned: dict[str, Any] = {}
    for e in others:
        owned = _union(owned, e.get("fieldsV1", {}))
    really = patching.subtract(dropped, owned)
    return patching.remove_fields(merged, really) if really else merged


def _last_applied(obj: Obj) -> str | None:
    annotations = (obj.get("metadata") or {}).get("annotations") or {}
    value = annotations.get(LAST_APPLIED)
    return value if isinstance(value, str) and value else None


def _unchanged_since_last_applied(live: Obj) -> set[tuple[str, ...]]:
    """The leaves of the last-applied configuration whose live value is still the applied one
    (kube: its field set minus what Compare finds modified, added or removed)."""
    raw = _last_applied(live)
    if raw is None:
        return set()
    try:
        last = json.loads(raw)
    except ValueError:
        return set()
    if not isinstance(last, dict):
        return set()
    return {
        leaf
        for leaf in patching.leaves(patching.field_set(last))
        if patching.value_at(last, leaf) == patching.value_at(live, leaf)
    }


def _build_last_applied(config: Obj) -> str:
    """The applied configuration without the annotation itself, encoded as kubectl's is (Go's
    JSON of a map: sorted keys, no spaces, a final newline)."""
    copied = copy.deepcopy(config)
    annotations = (copied.get("metadata") or {}).get("annotations")
    if isinstance(annotations, dict):
        annotations.pop(LAST_APPLIED, None)
    return json.dumps(copied, sort_keys=True, separators=(",", ":")) + "\n"
