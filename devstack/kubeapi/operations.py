"""The verbs: create, get, list, update, patch, delete, and the generic rules that go with them.

This is the part of kube-apiserver's generic registry a client can see: server-filled metadata
(uid, creationTimestamp, resourceVersion, generation, generateName, managedFields), optimistic
concurrency (409 Conflict), the status subresource split, generation rules, finalizers and
deletionTimestamp, namespace lifecycle checks, pruning/defaulting/validation of custom resources,
`fieldValidation`, `dryRun`, and consistent paginated lists.  It is HTTP-free: `server.py` maps
requests onto these calls, and `controllers` call them as kube-controller-manager would.
"""

from __future__ import annotations

import base64
import copy
import json
import secrets
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from . import (
    builtins,
    crds,
    errors,
    events,
    managedfields,
    patching,
    schema,
    selectors,
    validation,
)
from .errors import Cause
from .resources import Registry, ResourceType
from .store import Store

Obj = dict[str, Any]

MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
STRATEGIC_PATCH = "application/strategic-merge-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"
APPLY_PATCH_CBOR = "application/apply-patch+cbor"

_GENERATE_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # k8s.io/apimachinery/pkg/util/rand


TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


def utcnow() -> str:
    return datetime.now(UTC).strftime(TIME_FORMAT)


def _later(timestamp: str, seconds: int) -> str:
    """`timestamp` (metav1.Time) moved by `seconds`."""
    moved = datetime.strptime(timestamp, TIME_FORMAT).replace(tzinfo=UTC) + timedelta(
        seconds=seconds
    )
    return moved.strftime(TIME_FORMAT)


@dataclass
class Context:
    """Per-request options that shape a write."""

    manager: str = "unknown"
    dry_run: bool = False
    field_validation: str = "Warn"  # Strict | Warn | Ignore
    warnings: list[str] = field(default_factory=list)


def random_suffix(n: int = 5) -> str:
    return "".join(secrets.choice(_GENERATE_ALPHABET) for _ in range(n))


def _spec_part(obj: Obj, include_status: bool) -> Obj:
    return {k: v for k, v in obj.items() if k != "metadata" and (include_status or k != "status")}


def _unchanged(new: Obj, old: Obj) -> bool:
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


class Operations:
    def __init__(
        self, store: Store, registry: Registry, *, clock: Callable[[], str] = utcnow
    ) -> None:
        self.store = store
        self.registry = registry
        self.clock = clock

    # --- helpers -------------------------------------------------------------------------------

    def render(self, rt: ResourceType, version: str, obj: Obj, *, shared: bool = False) -> Obj:
        """`obj` as served in `version`. `shared=True` skips the deep copy: for output that is
        only serialised (lists, watch events), since stored objects are never mutated."""
        out = obj if shared else copy.deepcopy(obj)
        rendered = {"apiVersion": rt.api_version(version), "kind": rt.kind}
        rendered.update({k: v for k, v in out.items() if k not in ("apiVersion", "kind")})
        return events.from_core(rendered) if rt.group == events.GROUP else rendered

    def _check_namespace(self, rt: ResourceType, namespace: str, name: str, creating: bool) -> None:
        if not rt.namespaced:
            return
        ns = self.store.peek("/namespaces", "", namespace)
        if ns is None:
            raise errors.not_found("namespaces", "", namespace)
        if creating and ns["metadata"].get("deletionTimestamp"):
            raise errors.forbidden(
                rt.plural,
                rt.group,
                name,
                f"unable to create new content in namespace {namespace} because it is being "
                "terminated",
            )

    def _existing(self, rt: ResourceType, namespace: str, name: str) -> Obj:
        obj = self.store.peek(rt.key, namespace if rt.namespaced else "", name)
        if obj is None:
            raise errors.not_found(rt.plural, rt.group, name)
        return obj

    def _custom_resource(
        self, rt: ResourceType, version: str, obj: Obj, ctx: Context, old: Obj | None = None
    ) -> list[Cause]:
        """Prune, default and validate a custom resource against its version's schema (an
        update's unchanged top-level fields are not validated again: `schema.validate`)."""
        sch = rt.schemas.get(version)
        if sch is None:
            return []
        pruned_obj, pruned = schema.prune_and_default(obj, sch)
        self._unknown_fields(rt, version, pruned, ctx)
        obj.clear()
        obj.update(pruned_obj)
        return schema.validate(obj, sch, old)

    @staticmethod
    def _unknown_fields(rt: ResourceType, version: str, pruned: list[str], ctx: Context) -> None:
        """fieldValidation: Strict rejects dropped fields, Warn reports them, Ignore is silent."""
        if pruned and ctx.field_validation == "Strict":
            fields = ", ".join(f'unknown field "{p}"' for p in pruned)
            raise errors.bad_request(
                f'{rt.kind} in version "{version}" cannot be handled as a {rt.kind}: '
                f"strict decoding error: {fields}"
            )
        if pruned and ctx.field_validation == "Warn":
            ctx.warnings.extend(f'unknown field "{p}"' for p in pruned)

    def _validate_common(
        self, rt: ResourceType, version: str, obj: Obj, old: Obj | None, ctx: Context
    ) -> None:
        self._unknown_fields(rt, version, builtins.prune_known_fields(rt, obj), ctx)
        md = obj["metadata"]
        causes = [] if old is not None else builtins.validate_name(rt, md["name"])
        causes += builtins.validate_metadata(md)
        if rt.builtin:
            if rt.kind == "CustomResourceDefinition":
                causes += crds.prepare(obj, old, self.clock())
            else:
                causes += builtins.prepare(rt, obj, old)
        else:
            causes += self._custom_resource(rt, version, obj, ctx, old)
        if causes:
            raise errors.invalid(rt.kind, rt.group, md.get("name", ""), causes)

    # --- reads ---------------------------------------------------------------------------------

    def get(self, rt: ResourceType, version: str, namespace: str, name: str) -> Obj:
        """The object as served; shares the stored object's parts, so callers only read it (the
        server serialises it)."""
        return self.render(rt, version, self._existing(rt, namespace, name), shared=True)

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
        labels = selectors.parse_label_selector(label_selector)
        fields = selectors.parse_field_selector(field_selector, rt, version)
        start = ""
        if continue_token:
            try:
                token = json.loads(base64.b64decode(continue_token))
                snap_rv = int(token["rv"])
                start = str(token["start"])
            except (ValueError, KeyError, TypeError) as exc:
                raise errors.bad_request(f"continue key is not valid: {exc}") from exc
            try:
                items = self.store.snapshot(rt.key, snap_rv, namespace)
            except errors.ApiError as exc:
                raise errors.expired(
                    "The provided continue parameter is too old to display a consistent list "
                    "result. You can start a new list without the continue parameter, or use the "
                    "continue token in this response to retrieve the remainder of the results. "
                    "Continuing with the provided token results in an inconsistent list - objects "
                    "that were created, modified, or deleted between the time the first chunk was "
                    "returned and now may show up in the list."
                ) from exc
            list_rv = snap_rv
        elif resource_version_match == "Exact" and resource_version:
            snap_rv = _parse_rv(resource_version)
            items = self.store.snapshot(rt.key, snap_rv, namespace)
            list_rv = snap_rv
        else:
            if resource_version_match and resource_version_match not in ("NotOlderThan", "Exact"):
                raise errors.bad_request(
                    f'resourceVersionMatch: Unsupported value: "{resource_version_match}"'
                )
            items = self.store.objects_of(rt.key, namespace)
            list_rv = self.store.rv
        selected = [
            o
            for o in items
            if _item_key(o) > start
            and selectors.labels_match(labels, o)
            and selectors.fields_match(fields, o)
        ]
        metadata: Obj = {"resourceVersion": str(list_rv)}
        if limit and limit > 0 and len(selected) > limit:
            page = selected[:limit]
            token = {"v": "meta.k8s.io/v1", "rv": list_rv, "start": _item_key(page[-1])}
            metadata["continue"] = base64.b64encode(json.dumps(token).encode()).decode()
            if not labels and not fields:
                metadata["remainingItemCount"] = len(selected) - limit
            selected = page
        rendered = [self.render(rt, version, o, shared=True) for o in selected]
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

    # --- create --------------------------------------------------------------------------------

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
        if not isinstance(body, dict):
            raise errors.bad_request("the body of the request was not a JSON object")
        _check_type_meta(rt, version, body)
        obj = copy.deepcopy(body)
        if rt.group == events.GROUP:
            obj = events.to_core(obj)
        md = obj.get("metadata")
        if not isinstance(md, dict):
            md = obj["metadata"] = {}
        if rt.namespaced:
            if md.get("namespace") and md["namespace"] != namespace:
                raise errors.bad_request(
                    "the namespace of the provided object does not match the namespace sent on "
                    "the request"
                )
            md["namespace"] = namespace
        else:
            md.pop("namespace", None)
        if md.get("resourceVersion"):
            raise errors.bad_request("resourceVersion should not be set on objects to be created")
        if not md.get("name"):
            prefix = md.get("generateName")
            if not prefix:
                raise errors.invalid(
                    rt.kind,
                    rt.group,
                    "",
                    [
                        Cause(
                            "FieldValueRequired",
                            "Required value: name or generateName is required",
                            "metadata.name",
                        )
                    ],
                )
            prefix = prefix[:58]
            for _ in range(20):
                candidate = prefix + random_suffix()
                if self.store.peek(rt.key, md.get("namespace", ""), candidate) is None:
                    md["name"] = candidate
                    break
        name = md["name"]
        self._check_namespace(rt, namespace, name, creating=True)
        if not rt.builtin and rt.crd_name:
            crd = self.store.peek("apiextensions.k8s.io/customresourcedefinitions", "", rt.crd_name)
            if crd is not None and crd["metadata"].get("deletionTimestamp"):
                raise errors.ApiError(
                    405,
                    "MethodNotAllowed",
                    "create not allowed while custom resource definition is terminating",
                    {},
                )
        for f in (
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "generation",
            "selfLink",
            "managedFields",
        ):
            md.pop(f, None)
        obj["apiVersion"] = rt.api_version(rt.storage_version)
        obj["kind"] = rt.kind
        if rt.has_status(version):
            obj.pop("status", None)  # prepare() sets the initial status of kinds that have one
        self._validate_common(rt, version, obj, None, ctx)
        if self.store.peek(rt.key, md.get("namespace", ""), name) is not None:
            raise errors.already_exists(rt.plural, rt.group, name)
        if rt.builtin and rt.kind == "Service":
            self._allocate_cluster_ip(obj)
        now = self.clock()
        md["uid"] = str(uuid.uuid4())
        md["creationTimestamp"] = now
        if rt.has_generation:
            md["generation"] = 1
        md["managedFields"] = (
            managed
            if managed is not None
            else managedfields.record_update(
                None,
                manager=ctx.manager,
                api_version=rt.api_version(version),
                now=now,
                old=None,
                new=obj,
                subresource=None,
            )
        )
        if not md["managedFields"]:
            md.pop("managedFields")
        if ctx.dry_run:
            out = copy.deepcopy(obj)
            out["metadata"].pop("resourceVersion", None)
            return self.render(rt, version, out)
        stored = self.store.create(rt.key, obj)  # shared: rendered for reading only
        if rt.kind == "CustomResourceDefinition" and rt.builtin:
            self.registry.add(crds.resource_type(stored))
        return self.render(rt, version, stored, shared=True)

    def _allocate_cluster_ip(self, svc: Obj) -> None:
        """A free address of the service CIDR 10.96.0.0/12 (from 10.96.0.1, which the
        `kubernetes` Service gets) for a Service that asks for none; `None` stays headless."""
        spec = svc["spec"]
        if spec.get("type") == "ExternalName" or spec.get("clusterIP"):
            if spec.get("clusterIP"):
                spec.setdefault("clusterIPs", [spec["clusterIP"]])
            return
        used = {(o.get("spec") or {}).get("clusterIP") for o in self.store.objects_of("/services")}
        n = 1
        while (ip := f"10.96.{n // 256}.{n % 256}") in used or n % 256 in (0, 255):
            n += 1
        spec["clusterIP"] = ip
        spec["clusterIPs"] = [ip]

    # --- update --------------------------------------------------------------------------------

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
        if not isinstance(body, dict):
            raise errors.bad_request("the body of the request was not a JSON object")
        old = self._existing(rt, namespace, name)
        if subresource is None and not from_patch:
            _check_type_meta(rt, version, body)
        # A PUT's body was parsed for this request alone: it is ours to change. A patch's merged
        # object may share parts with the stored one.
        incoming = copy.deepcopy(body) if from_patch else body
        if rt.group == events.GROUP:
            incoming = events.to_core(incoming)
        imd: Obj = incoming["metadata"] if isinstance(incoming.get("metadata"), dict) else {}
        if imd.get("name") and imd["name"] != name:
            raise errors.bad_request(
                f"the name of the object ({imd['name']}) does not match the name on the URL "
                f"({name})"
            )
        if rt.namespaced and imd.get("namespace") and imd["namespace"] != namespace:
            raise errors.bad_request(
                "the namespace of the provided object does not match the namespace sent on the "
                "request"
            )
        rv = imd.get("resourceVersion")
        if rv:
            if rv != old["metadata"]["resourceVersion"]:
                raise errors.conflict(rt.plural, rt.group, name)
        elif not rt.builtin and not from_patch:
            raise errors.invalid(
                rt.kind,
                rt.group,
                name,
                [
                    Cause(
                        "FieldValueInvalid",
                        "Invalid value: 0x0: must be specified for an update",
                        "metadata.resourceVersion",
                    )
                ],
            )
        omd = old["metadata"]
        if imd.get("uid") and imd["uid"] != omd["uid"]:
            # rest.BeforeUpdate keeps the stored uid only when none is sent; another is refused
            immutable = validation.invalid("metadata.uid", imd["uid"], "field is immutable")
            raise errors.invalid(rt.kind, rt.group, name, [immutable])
        if subresource == "status":
            # Shallow: stored objects are never changed in place, and below only the top level
            # and the metadata (copied) are written to.
            new = dict(old)
            new["metadata"] = dict(old["metadata"])
            if "status" in incoming:
                new["status"] = incoming["status"]
            else:
                new.pop("status", None)
        else:
            new = incoming
            new["metadata"] = dict(imd)
            if rt.has_status(version) and subresource is None:
                if "status" in old:
                    new["status"] = old["status"]  # shared with the stored version, unchanged
                else:
                    new.pop("status", None)
        nmd = new["metadata"]
        for f in (
            "name",
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "generation",
        ):
            if f in omd:
                nmd[f] = omd[f]
            else:
                nmd.pop(f, None)
        if rt.namespaced:
            nmd["namespace"] = namespace
        else:
            nmd.pop("namespace", None)
        nmd["resourceVersion"] = omd["resourceVersion"]
        nmd.pop("selfLink", None)
        new["apiVersion"] = rt.api_version(rt.storage_version)
        new["kind"] = rt.kind
        if omd.get("deletionTimestamp"):
            added = set(nmd.get("finalizers") or []) - set(omd.get("finalizers") or [])
            if added:
                raise errors.invalid(
                    rt.kind,
                    rt.group,
                    name,
                    [
                        Cause(
                            "FieldValueForbidden",
                            "Forbidden: no new finalizers can be added if the object is being "
                            "deleted, found new finalizers " + json.dumps(sorted(added)),
                            "metadata.finalizers",
                        )
                    ],
                )
        if subresource != "status":
            self._validate_common(rt, version, new, old, ctx)
        elif not rt.builtin:
            causes = self._custom_resource(rt, version, new, ctx, old)
            if causes:
                raise errors.invalid(rt.kind, rt.group, name, causes)
        if rt.has_generation and "generation" in omd:
            include_status = not rt.has_status(version)
            if _spec_part(new, include_status) != _spec_part(old, include_status):
                nmd["generation"] = omd["generation"] + 1
        now = self.clock()
        if managed is not None:
            nmd["managedFields"] = managed
        else:
            nmd["managedFields"] = managedfields.record_update(
                omd.get("managedFields"),
                manager=ctx.manager,
                api_version=rt.api_version(version),
                now=now,
                old=old,
                new=new,
                subresource=subresource,
            )
        if not nmd["managedFields"]:
            nmd.pop("managedFields")
        if _unchanged(new, old):
            return self.render(rt, version, old, shared=True)
        if ctx.dry_run:
            return self.render(rt, version, new, shared=True)
        if (
            nmd.get("deletionTimestamp")
            and not nmd.get("deletionGracePeriodSeconds")
            and not nmd.get("finalizers")
            and not self._spec_finalizers(rt, new)
        ):
            # The update that empties the finalizers of a terminating object is its deletion
            # (not while a grace period runs: a terminating Pod's status writes keep it):
            # watchers see one DELETED event (with the last stored state, as etcd's delete
            # returns it); the caller gets the object it asked for, at the deletion's RV.
            gone = self.store.delete(rt.key, namespace if rt.namespaced else "", name)
            self._after_delete(rt, gone)
            nmd["resourceVersion"] = gone["metadata"]["resourceVersion"]
            return self.render(rt, version, new, shared=True)
        stored = self.store.update(rt.key, new)  # shared: rendered for reading only
        if rt.kind == "CustomResourceDefinition" and rt.builtin:
            self.registry.add(crds.resource_type(stored))
        return self.render(rt, version, stored, shared=True)

    @staticmethod
    def _spec_finalizers(rt: ResourceType, obj: Obj) -> list[str]:
        if rt.kind == "Namespace" and rt.builtin:
            return list((obj.get("spec") or {}).get("finalizers") or [])
        return []

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
        current = self.render(rt, version, self._existing(rt, namespace, name))
        if patch_type == MERGE_PATCH:
            if not isinstance(patch, dict):
                raise errors.bad_request(
                    "json: cannot unmarshal into Go value of type map[string]interface {}"
                )
            new = patching.merge_patch(current, patch)
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
            if not isinstance(patch, dict):
                raise errors.bad_request(
                    "json: cannot unmarshal into Go value of type map[string]interface {}"
                )
            new = patching.strategic_merge_patch(current, patch)
        else:
            raise errors.unsupported_media_type(patch_type)
        if not isinstance(new, dict):
            raise errors.bad_request("the patch did not produce an object")
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
        existing = self.store.peek(rt.key, namespace if rt.namespaced else "", name)
        now = self.clock()
        api_version = rt.api_version(version)
        if existing is None:
            if subresource:
                raise errors.not_found(rt.plural, rt.group, name)
            merged, entries = managedfields.apply(
                None,
                config,
                manager=ctx.manager,
                api_version=api_version,
                now=now,
                force=force,
                subresource=None,
            )
            merged.setdefault("metadata", {})["name"] = name
            return self.create(rt, version, namespace, merged, ctx, managed=entries), True
        live = self.render(rt, version, existing)
        rv = md.get("resourceVersion")
        if rv and rv != live["metadata"]["resourceVersion"]:
            raise errors.conflict(rt.plural, rt.group, name)
        merged, entries = managedfields.apply(
            live,
            config,
            manager=ctx.manager,
            api_version=api_version,
            now=now,
            force=force,
            subresource=subresource,
        )
        merged["metadata"]["resourceVersion"] = live["metadata"]["resourceVersion"]
        return self.update(
            rt,
            version,
            namespace,
            name,
            merged,
            ctx,
            subresource=subresource,
            from_patch=True,
            managed=entries,
        ), False

    # --- delete --------------------------------------------------------------------------------

    def delete(
        self,
        rt: ResourceType,
        version: str,
        namespace: str,
        name: str,
        options: Obj | None,
        ctx: Context,
    ) -> tuple[Obj, bool]:
        """Delete or start deleting; returns (response body, deleted now)."""
        options = options or {}
        obj = self._existing(rt, namespace, name)
        md = obj["metadata"]
        pre = options.get("preconditions") or {}
        if pre.get("uid") and pre["uid"] != md["uid"]:
            raise errors.conflict(
                rt.plural,
                rt.group,
                name,
                f"Precondition failed: UID in precondition: {pre['uid']}, UID in object meta: "
                f"{md['uid']}",
            )
        if pre.get("resourceVersion") and pre["resourceVersion"] != md["resourceVersion"]:
            raise errors.conflict(
                rt.plural,
                rt.group,
                name,
                f"Precondition failed: ResourceVersion in precondition: {pre['resourceVersion']}, "
                f"ResourceVersion in object meta: {md['resourceVersion']}",
            )
        policy = options.get("propagationPolicy")
        if policy is None and options.get("orphanDependents") is not None:
            policy = "Orphan" if options["orphanDependents"] else "Background"
        policy = policy or "Background"
        if policy not in ("Orphan", "Background", "Foreground"):
            raise errors.invalid(
                "DeleteOptions",
                "",
                "",
                [
                    Cause(
                        "FieldValueNotSupported",
                        f'Unsupported value: "{policy}": supported values: "Foreground", '
                        '"Background", "Orphan"',
                        "propagationPolicy",
                    )
                ],
            )
        if md.get("deletionTimestamp") and md.get("deletionGracePeriodSeconds"):
            return self._shorten_grace_period(rt, version, obj, options, ctx)
        finalizers = list(md.get("finalizers") or [])
        if (
            policy == "Foreground"
            and "foregroundDeletion" not in finalizers
            and self.dependents(md["uid"])
        ):
            finalizers.append("foregroundDeletion")
        if policy == "Orphan" and not ctx.dry_run:
            self.orphan_dependents(md["uid"])
        if (
            rt.builtin
            and rt.kind == "CustomResourceDefinition"
            and crds.CLEANUP_FINALIZER not in finalizers
        ):
            finalizers.append(crds.CLEANUP_FINALIZER)
        grace = builtins.pod_grace_period(obj, options) if rt.builtin and rt.kind == "Pod" else 0
        graceful = bool(grace) or bool(finalizers) or bool(self._spec_finalizers(rt, obj))
        if graceful:
            if md.get("deletionTimestamp") and finalizers == list(md.get("finalizers") or []):
                return self.render(rt, version, obj, shared=True), False
            new = copy.deepcopy(obj)
            nmd = new["metadata"]
            if not nmd.get("deletionTimestamp"):
                # A Pod's grace period: the kubelet (`controllers`) removes it when it ends.
                nmd["deletionTimestamp"] = _later(self.clock(), grace)
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
                        "lastTransitionTime": self.clock(),
                        "reason": "InstanceDeletionPending",
                        "message": "CustomResourceDefinition marked for deletion; CustomResource "
                        "deletion will begin soon",
                    }
                )
            if ctx.dry_run:
                return self.render(rt, version, new, shared=True), False
            stored = self.store.update(rt.key, new)
            return self.render(rt, version, stored, shared=True), False
        if ctx.dry_run:
            return self.render(rt, version, obj, shared=True), True
        gone = self.store.delete(rt.key, md.get("namespace", ""), name)
        self._after_delete(rt, gone)
        if rt.return_deleted_object:
            return self.render(rt, version, gone, shared=True), True
        details: Obj = {"name": name}
        if rt.group:
            details["group"] = rt.group
        details["kind"] = rt.plural
        details["uid"] = md["uid"]
        return {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Success",
            "details": details,
        }, True

    def _shorten_grace_period(
        self, rt: ResourceType, version: str, obj: Obj, options: Obj, ctx: Context
    ) -> tuple[Obj, bool]:
        """A delete of an object already in its grace period (rest.BeforeDelete): only a
        shorter `gracePeriodSeconds` changes anything; 0 without finalizers deletes it now."""
        md = obj["metadata"]
        asked = options.get("gracePeriodSeconds")
        current = int(md["deletionGracePeriodSeconds"])
        if asked is None or int(asked) >= current:
            return self.render(rt, version, obj, shared=True), False
        period = max(int(asked), 0)
        if period == 0 and not md.get("finalizers"):
            if ctx.dry_run:
                return self.render(rt, version, obj, shared=True), True
            gone = self.store.delete(rt.key, md.get("namespace", ""), md["name"])
            self._after_delete(rt, gone)
            return self.render(rt, version, gone, shared=True), True
        new = copy.deepcopy(obj)
        new["metadata"]["deletionTimestamp"] = _later(md["deletionTimestamp"], period - current)
        new["metadata"]["deletionGracePeriodSeconds"] = period
        if ctx.dry_run:
            return self.render(rt, version, new, shared=True), False
        return self.render(rt, version, self.store.update(rt.key, new), shared=True), False

    def bind(self, rt: ResourceType, namespace: str, name: str, node: str) -> Obj:
        """What a `pods/binding` does (the scheduler's write): sets `spec.nodeName`, through
        the store, since a Pod's spec is otherwise immutable."""
        new = copy.deepcopy(self._existing(rt, namespace, name))
        new["spec"]["nodeName"] = node
        return self.store.update(rt.key, new)

    def _after_delete(self, rt: ResourceType, gone: Obj) -> None:
        if rt.builtin and rt.kind == "CustomResourceDefinition":
            spec = gone.get("spec") or {}
            self.registry.remove(f"{spec.get('group')}/{(spec.get('names') or {}).get('plural')}")

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

    # --- owner references (used by delete and by the garbage collector) -------------------------

    def dependents(self, uid: str) -> list[tuple[ResourceType, Obj]]:
        return [
            (rt, o)
            for rt in self.registry.all()
            for o in self.store.objects_of(rt.key)
            if any(ref.get("uid") == uid for ref in o["metadata"].get("ownerReferences") or [])
        ]

    def orphan_dependents(self, uid: str) -> None:
        ctx = Context(manager="kube-controller-manager")
        for rt, o in self.dependents(uid):
            new = copy.deepcopy(o)
            refs = [r for r in new["metadata"].get("ownerReferences") or [] if r.get("uid") != uid]
            if refs:
                new["metadata"]["ownerReferences"] = refs
            else:
                new["metadata"].pop("ownerReferences", None)
            md = new["metadata"]
            self.update(
                rt,
                rt.storage_version,
                md.get("namespace", ""),
                md["name"],
                new,
                ctx,
                from_patch=True,
            )


def _check_type_meta(rt: ResourceType, version: str, body: Obj) -> None:
    """A body of another kind or group/version than the URL's is a 400, as decoding fails."""
    kind, api_version = body.get("kind"), body.get("apiVersion")
    if (kind and kind != rt.kind) or (api_version and api_version != rt.api_version(version)):
        raise errors.bad_request(
            f"the API version in the data ({api_version}) and kind ({kind}) do not match the "
            f"expected API version ({rt.api_version(version)}) and kind ({rt.kind})"
        )


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
