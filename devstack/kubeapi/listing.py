"""Lists, as kube-apiserver serves them: label and field selectors, `limit` pages with
`continue` tokens that read one consistent snapshot (410 Expired once it is compacted away),
`resourceVersion` with `resourceVersionMatch`, and `remainingItemCount`.

Not here: watches (server.py), which start from a list's resourceVersion.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING

from shared.api.meta import Obj

from . import errors, selectors
from .resources import ResourceType

if TYPE_CHECKING:
    from .operations import Operations


_CONTINUE_EXPIRED = (
    "The provided continue parameter is too old to display a consistent list result. You can "
    "start a new list without the continue parameter, or use the continue token in this "
    "response to retrieve the remainder of the results. Continuing with the provided token "
    "results in an inconsistent list - objects that were created, modified, or deleted between "
    "the time the first chunk was returned and now may show up in the list."
)


@dataclass(frozen=True)
class ListOptions:
    """A list's query parameters."""

    label_selector: str | None = None
    field_selector: str | None = None
    limit: int | None = None
    continue_token: str | None = None
    resource_version: str | None = None
    resource_version_match: str | None = None


def list_collection(
    ops: Operations, rt: ResourceType, version: str, namespace: str | None, opts: ListOptions
) -> Obj:
    labels = selectors.parse_label_selector(opts.label_selector)
    fields = selectors.parse_field_selector(opts.field_selector, rt, version)
    items, list_rv, start = _items(ops, rt, namespace, opts)
    selected = [
        o
        for o in items
        if _item_key(o) > start
        and selectors.labels_match(labels, o)
        and selectors.fields_match(fields, o)
    ]
    metadata: Obj = {"resourceVersion": str(list_rv)}
    limit = opts.limit
    if limit and limit > 0 and len(selected) > limit:
        page = selected[:limit]
        token = {"v": "meta.k8s.io/v1", "rv": list_rv, "start": _item_key(page[-1])}
        metadata["continue"] = base64.b64encode(json.dumps(token).encode()).decode()
        if not labels and not fields:
            metadata["remainingItemCount"] = len(selected) - limit
        selected = page
    rendered = [ops.render(rt, version, o, shared=True) for o in selected]
    if rt.builtin:
        # typed lists of built-in kinds carry no apiVersion/kind on items
        for item in rendered:
            item.pop("apiVersion", None)
            item.pop("kind", None)
    return {
        "apiVersion": rt.api_version(version),
        "kind": rt.list_kind,
        "metadata": metadata,
        "items": rendered,
    }


def _items(
    ops: Operations, rt: ResourceType, namespace: str | None, opts: ListOptions
) -> tuple[list[Obj], int, str]:
    """The objects to list from, the list's resourceVersion, and the key to start after."""
    store = ops.store
    if opts.continue_token:
        try:
            token = json.loads(base64.b64decode(opts.continue_token))
            snap_rv = int(token["rv"])
            start = str(token["start"])
        except (ValueError, KeyError, TypeError) as exc:
            raise errors.bad_request(f"continue key is not valid: {exc}") from exc
        try:
            return store.snapshot(rt.key, snap_rv, namespace), snap_rv, start
        except errors.ApiError as exc:
            raise errors.expired(_CONTINUE_EXPIRED) from exc
    match = opts.resource_version_match
    if match == "Exact" and opts.resource_version:
        snap_rv = _parse_rv(opts.resource_version)
        return store.snapshot(rt.key, snap_rv, namespace), snap_rv, ""
    if match and match not in ("NotOlderThan", "Exact"):
        raise errors.bad_request(f'resourceVersionMatch: Unsupported value: "{match}"')
    return store.objects_of(rt.key, namespace), store.rv, ""


def _item_key(obj: Obj) -> str:
    md = obj["metadata"]
    # NUL sorts before every name character, so string order equals (namespace, name) order
    return f"{md.get('namespace', '')}\x00{md['name']}"


def _parse_rv(rv: str) -> int:
    try:
        return int(rv)
    except ValueError as exc:
        raise errors.bad_request(
            f'resourceVersion: Invalid value: "{rv}": invalid value, must be an integer'
        ) from exc
