"""The verbs: create, get, list, update, patch, delete, and the generic rules that go with them.

This is the part of kube-apiserver's generic registry a client can see: server-filled metadata
(uid, creationTimestamp, resourceVersion, generation, generateName, managedFields), optimistic
concurrency (409 Conflict), the status subresource split, generation rules, finalizers and
deletionTimestamp, namespace lifecycle checks, pruning/defaulting/validation of custom resources,
`fieldValidation`, `dryRun`, and consistent paginated lists.  It is HTTP-free: `server.py` maps
requests onto these calls, and `controllers` call them as kube-controller-manager would.

This module holds the verbs' signatures and patching; the steps are elsewhere: the write
pipeline of create and update (writes.py, defaulting.py, storing.py), delete (deletion.py),
lists (listing.py).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from shared.api.meta import Obj

from . import deletion, errors, events, listing, managedfields, patching, storing, writes
from .context import Context, utcnow
from .resources import Registry, ResourceType
from .store import Store
from .writes import Write

__all__ = ["Context", "Operations", "utcnow"]


MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
STRATEGIC_PATCH = "application/strategic-merge-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"
APPLY_PATCH_CBOR = "application/apply-patch+cbor"


class Operations:
    def __init__(
        self, store: Store, registry: Registry, *, clock: Callable[[], str] = utcnow
    ) -> None:
        self.store = store
        self.registry = registry
        self.clock = clock

    def render(self, rt: ResourceType, version: str, obj: Obj, *, shared: bool = False) -> Obj:
        """`obj` as served in `version`. `shared=True` skips the deep copy: for output that is
        only serialised (lists, watch events), since stored objects are never mutated."""
        out = obj if shared else copy.deepcopy(obj)
        rendered = {"apiVersion": rt.api_version(version), "kind": rt.kind}
        rendered.update({k: v for k, v in out.items() if k not in ("apiVersion", "kind")})
        return events.from_core(rendered) if rt.group == events.GROUP else rendered

    # --- reads ---------------------------------------------------------------------------------

    def get(self, rt: ResourceType, version: str, namespace: str, name: str) -> Obj:
        """The object as served; shares the stored object's parts, so callers only read it (the
        server serialises it)."""
        return self.render(rt, version, writes.existing(self, rt, namespace, name), shared=True)

    def list_collection(
        self,
        rt: ResourceType,
        version: str,
        namespace: str | None,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
        limit: int | None = None,
        continue_token: str | None = None,
        resource_version: str | None = None,
        resource_version_match: str | None = None,
    ) -> Obj:
        opts = listing.ListOptions(
            label_selector=label_selector,
            field_selector=field_selector,
            limit=limit,
            continue_token=continue_token,
            resource_version=resource_version,
            resource_version_match=resource_version_match,
        )
        return listing.list_collection(self, rt, version, namespace, opts)

    # --- writes --------------------------------------------------------------------------------

    def create(
        self,
        rt: ResourceType,
        version: str,
        namespace: str,
        body: Any,
        ctx: Context,
        *,
        managed: list[Obj] | None = None,
    ) -> Obj:
        w = Write(rt=rt, version=version, namespace=namespace, ctx=ctx, body=body, managed=managed)
        writes.run(self, w, writes.CREATE)
        return storing.store_created(self, w)

    def update(
        self,
        rt: ResourceType,
        version: str,
        namespace: str,
        name: str,
        body: Any,
        ctx: Context,
        *,
        subresource: str | None = None,
        from_patch: bool = False,
        managed: list[Obj] | None = None,
    ) -> Obj:
        w = Write(
            rt=rt,
            version=version,
            namespace=namespace,
            name=name,
            ctx=ctx,
            body=body,
            subresource=subresource,
            from_patch=from_patch,
            managed=managed,
        )
        writes.run(self, w, writes.UPDATE)
        return storing.store_updated(self, w)

    def bind(self, rt: ResourceType, namespace: str, name: str, node: str) -> Obj:
        """What a `pods/binding` does (the scheduler's write): sets `spec.nodeName`, through
        the store, since a Pod's spec is otherwise immutable."""
        new = copy.deepcopy(writes.existing(self, rt, namespace, name))
        new["spec"]["nodeName"] = node
        return self.store.update(rt.key, new)

    # --- patch ---------------------------------------------------------------------------------

    def patch(
        self,
        rt: ResourceType,
        version: str,
        namespace: str,
        name: str,
        patch_type: str,
        patch: Any,
        ctx: Context,
        *,
        subresource: str | None = None,
        force: bool = False,
    ) -> tuple[Obj, bool]:
        """Apply a patch; returns (object, created) - only apply patches create."""
        if patch_type in (APPLY_PATCH, APPLY_PATCH_CBOR):
            return self._apply(
                rt, version, namespace, name, patch, ctx, subresource=subresource, force=force
            )
        current = self.render(rt, version, writes.existing(self, rt, namespace, name))
        new = _patched(rt, current, patch_type, patch)
        if patch_type != JSON_PATCH and isinstance(patch, dict):
            prv = (
                (patch.get("metadata") or {}).get("resourceVersion")
                if isinstance(patch.get("metadata"), dict)
                else None
            )
            if prv is not None and prv != current["metadata"]["resourceVersion"]:
                raise errors.conflict(rt.plural, rt.group, name)
        new.setdefault("metadata", {})
        if not new["metadata"].get("resourceVersion"):
            new["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
        obj = self.update(
            rt, version, namespace, name, new, ctx, subresource=subresource, from_patch=True
        )
        return obj, False

    def _apply(
        self,
        rt: ResourceType,
        version: str,
        namespace: str,
        name: str,
        config: Any,
        ctx: Context,
        *,
        subresource: str | None,
        force: bool,
    ) -> tuple[Obj, bool]:
        """Server-side apply: creates the object if there is none (not through a subresource),
        else updates it with the merged configuration and its new managed fields."""
        _check_apply(config, ctx, name)
        existing = self.store.peek(rt.key, namespace if rt.namespaced else "", name)
        if existing is None and subresource:
            raise errors.not_found(rt.plural, rt.group, name)
        live = None if existing is None else self.render(rt, version, existing)
        rv = (config.get("metadata") or {}).get("resourceVersion")
        if live is not None and rv and rv != live["metadata"]["resourceVersion"]:
            raise errors.conflict(rt.plural, rt.group, name)
        merged, entries = managedfields.apply(
            live,
            config,
            manager=ctx.manager,
            api_version=rt.api_version(version),
            now=self.clock(),
            force=force,
            subresource=subresource,
        )
        if live is None:
            merged.setdefault("metadata", {})["name"] = name
            return self.create(rt, version, namespace, merged, ctx, managed=entries), True
        merged["metadata"]["resourceVersion"] = live["metadata"]["resourceVersion"]
        updated = self.update(
            rt,
            version,
            namespace,
            name,
            merged,
            ctx,
            subresource=subresource,
            from_patch=True,
            managed=entries,
        )
        return updated, False

    # --- delete --------------------------------------------------------------------------------

    delete = deletion.delete
    """Delete or start deleting; returns (response body, deleted now)."""

    def delete_collection(
        self,
        rt: ResourceType,
        version: str,
        namespace: str | None,
        options: Obj | None,
        ctx: Context,
        *,
        label_selector: str | None,
        field_selector: str | None,
    ) -> Obj:
        """Delete every selected object; answers the list of them as they were before (what
        kube's Store.DeleteCollection returns)."""
        listed = self.list_collection(
            rt, version, namespace, label_selector=label_selector, field_selector=field_selector
        )
        for item in listed["items"]:
            md = item["metadata"]
            try:
                self.delete(rt, version, md.get("namespace", ""), md["name"], options, ctx)
            except errors.ApiError as exc:
                if exc.code != 404:
                    raise
        return listed


def _check_apply(config: Any, ctx: Context, name: str) -> None:
    """An apply configuration is an object with its kind, sent by a named field manager."""
    if not isinstance(config, dict):
        raise errors.bad_request("error decoding YAML: the body is not an object")
    if ctx.manager in ("", "unknown") or not ctx.manager:
        raise errors.bad_request(
            "PATCH requests require fieldManager to be set when using server-side apply"
        )
    if not config.get("apiVersion") or not config.get("kind"):
        raise errors.bad_request("Object 'Kind' is missing in the applied configuration")
    md = config.get("metadata") or {}
    if md.get("name") and md["name"] != name:
        raise errors.bad_request(
            f"the name of the object ({md['name']}) does not match the name on the URL ({name})"
        )


def _patched(rt: ResourceType, current: Obj, patch_type: str, patch: Any) -> Obj:
    """`current` with a JSON, merge or strategic merge patch applied."""
    if patch_type == MERGE_PATCH:
        new = patching.merge_patch(current, _patch_object(patch))
    elif patch_type == JSON_PATCH:
        new = patching.json_patch(current, patch)
    elif patch_type == STRATEGIC_PATCH:
        if not rt.builtin:
            raise errors.ApiError(
                415,
                "UnsupportedMediaType",
                "the body of the request was in an unknown format - accepted media types "
                "include: "
                f"{JSON_PATCH}, {MERGE_PATCH}, {APPLY_PATCH}, {APPLY_PATCH_CBOR}",
            )
        new = patching.strategic_merge_patch(current, _patch_object(patch))
    else:
        raise errors.unsupported_media_type(patch_type)
    if not isinstance(new, dict):
        raise errors.bad_request("the patch did not produce an object")
    return new


def _patch_object(patch: Any) -> Obj:
    if not isinstance(patch, dict):
        raise errors.bad_request(
            "json: cannot unmarshal into Go value of type map[string]interface {}"
        )
    return patch
