"""OpenAPI v3 (`/openapi/v3`, `/openapi/v3/<api|apis/g/v>`) and a JSON `/openapi/v2`.

What kubectl needs from it: every served kind has a PATCH operation tagged with
`x-kubernetes-group-version-kind` that declares the `fieldValidation` query parameter, so
kubectl leaves validation to the server (`fieldValidation=Strict`) instead of validating with
the protobuf `/openapi/v2` this emulator does not serve.  Custom resources get their CRD schema
as the component schema (with the GVK extension, as kube-apiserver publishes it).  Built-in
kinds get kube's own schemas (`builtin_schemas`, with descriptions, GVK and patch extensions):
`kubectl explain` reads them, and kubectl computes client-side-apply strategic merge patches
from their `x-kubernetes-patch-*` extensions, as against kube-apiserver.  A document is built
once per set of served resources of its group/version (`document` caches it): the built-in
schemas are ~360 KB of JSON.
"""

from __future__ import annotations

import copy
import hashlib
import json
import weakref

from shared.api.meta import Obj

from . import builtin_schemas
from .discovery import KUBE_VERSION
from .resources import Registry, ResourceType

_PATCH_TYPES = [
    "application/apply-patch+yaml",
    "application/json-patch+json",
    "application/merge-patch+json",
    "application/strategic-merge-patch+json",
]

OBJECT_META = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
PATCH = "io.k8s.apimachinery.pkg.apis.meta.v1.Patch"


def _gv_path(group: str, version: str) -> str:
    return f"apis/{group}/{version}" if group else "api/v1"


def _def_name(rt: ResourceType, version: str) -> str:
    if rt.builtin:
        pkg = {
            "": "core",
            "apps": "apps",
            "coordination.k8s.io": "coordination",
            "events.k8s.io": "events",
            "apiextensions.k8s.io": "apiextensions",
        }
        if rt.group == "apiextensions.k8s.io":
            return f"io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.{version}.{rt.kind}"
        return f"io.k8s.api.{pkg.get(rt.group, rt.group)}.{version}.{rt.kind}"
    rev = ".".join(reversed(rt.group.split(".")))
    return f"{rev}.{version}.{rt.kind}"


def _meta_schemas() -> Obj:
    """The apimachinery definitions every group/version's documents refer to."""
    string_map = {"type": "object", "additionalProperties": {"type": "string", "default": ""}}
    opaque_list = {
        "type": "array",
        "items": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
    }
    return {
        OBJECT_META: {
            "type": "object",
            "description": "ObjectMeta is metadata that all persisted resources must have.",
            "properties": {
                "name": {"type": "string"},
                "generateName": {"type": "string"},
                "namespace": {"type": "string"},
                "labels": copy.deepcopy(string_map),
                "annotations": copy.deepcopy(string_map),
                "finalizers": {"type": "array", "items": {"type": "string", "default": ""}},
                "ownerReferences": copy.deepcopy(opaque_list),
                "uid": {"type": "string"},
                "resourceVersion": {"type": "string"},
                "generation": {"type": "integer", "format": "int64"},
                "creationTimestamp": {"type": "string", "format": "date-time"},
                "deletionTimestamp": {"type": "string", "format": "date-time"},
                "managedFields": copy.deepcopy(opaque_list),
            },
        },
        PATCH: {
            "type": "object",
            "description": "Patch is provided to give a concrete name and type to the Kubernetes "
            "PATCH request body.",
        },
        "io.k8s.apimachinery.pkg.apis.meta.v1.Status": {
            "type": "object",
            "x-kubernetes-preserve-unknown-fields": True,
        },
        "io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions": {
            "type": "object",
            "x-kubernetes-preserve-unknown-fields": True,
        },
    }


def _doc(registry: Registry, group: str, version: str) -> Obj:
    paths: Obj = {}
    schemas = _meta_schemas()
    for rt in registry.in_group_version(group, version):
        dname = _def_name(rt, version)
        schemas.update(_kind_schemas(rt, version, dname))
        paths.update(_paths(rt, group, version, {"$ref": f"#/components/schemas/{dname}"}))
    return {
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": KUBE_VERSION["gitVersion"]},
        "paths": paths,
        "components": {"schemas": schemas},
    }


def _kind_schemas(rt: ResourceType, version: str, dname: str) -> Obj:
    """A kind's component schema (for a built-in kind, with the definitions it refers to): kube's
    own, else an open object; for a custom resource, its CRD schema with the GVK extension."""
    meta_ref = {"$ref": f"#/components/schemas/{OBJECT_META}"}
    if rt.builtin and dname in builtin_schemas.definitions():
        return builtin_schemas.closure([dname])
    if rt.builtin:
        return {
            dname: {
                "type": "object",
                "properties": {
                    "apiVersion": {"type": "string"},
                    "kind": {"type": "string"},
                    "metadata": {"allOf": [meta_ref], "default": {}},
                },
                "x-kubernetes-preserve-unknown-fields": True,
            }
        }
    body = copy.deepcopy(
        rt.schemas.get(version) or {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
    )
    props = body.setdefault("properties", {})
    props["apiVersion"] = {"type": "string"}
    props["kind"] = {"type": "string"}
    props["metadata"] = {"allOf": [meta_ref]}
    body["x-kubernetes-group-version-kind"] = [_gvk(rt, version)]
    return {dname: body}


def _gvk(rt: ResourceType, version: str) -> Obj:
    return {"group": rt.group, "version": version, "kind": rt.kind}


def _query(name: str, kind: str = "string") -> Obj:
    return {"name": name, "in": "query", "schema": {"type": kind, "uniqueItems": True}}


def _paths(rt: ResourceType, group: str, version: str, ref: Obj) -> Obj:
    """The collection's, the item's and (if it has one) the status subresource's operations,
    each tagged with its action and GVK."""
    prefix = "/" + _gv_path(group, version)
    if rt.namespaced:
        coll = f"{prefix}/namespaces/{{namespace}}/{rt.plural}"
    else:
        coll = f"{prefix}/{rt.plural}"
    item = f"{coll}/{{name}}"
    ops = _Operations(rt, version, ref)
    paths: Obj = {
        coll: {
            "get": ops.op("list", f"list{rt.kind}"),
            "post": ops.put("post", f"create{rt.kind}"),
            "delete": ops.op("deletecollection", f"deletecollection{rt.kind}"),
        },
        item: {**ops.item(rt.kind), "delete": ops.op("delete", f"delete{rt.kind}")},
    }
    if rt.has_status(version):
        paths[f"{item}/status"] = ops.item(f"{rt.kind}Status")
    return paths


class _Operations:
    """The operation objects of one kind in one version."""

    def __init__(self, rt: ResourceType, version: str, ref: Obj) -> None:
        self.gvk = _gvk(rt, version)
        self.ok = {"200": {"description": "OK", "content": {"application/json": {"schema": ref}}}}
        self.body = {"content": {"application/json": {"schema": ref}}, "required": True}
        self.common = [_query("dryRun"), _query("fieldManager"), _query("fieldValidation")]
        patch_ref = {"$ref": f"#/components/schemas/{PATCH}"}
        types = _PATCH_TYPES if rt.builtin else [t for t in _PATCH_TYPES if "strategic" not in t]
        self.patch_body = {"content": {t: {"schema": patch_ref} for t in types}, "required": True}

    def op(
        self,
        action: str,
        op_id: str,
        *,
        parameters: list[Obj] | None = None,
        request_body: Obj | None = None,
    ) -> Obj:
        o: Obj = {
            "operationId": op_id,
            "responses": self.ok,
            "x-kubernetes-action": action,
            "x-kubernetes-group-version-kind": self.gvk,
        }
        if parameters:
            o["parameters"] = parameters
        if request_body:
            o["requestBody"] = request_body
        return o

    def put(self, action: str, op_id: str) -> Obj:
        return self.op(action, op_id, parameters=self.common, request_body=self.body)

    def item(self, name: str) -> Obj:
        """get, put and patch of an object (`name`: the kind) or its status (`<kind>Status`)."""
        return {
            "get": self.op("get", f"read{name}"),
            "put": self.put("put", f"replace{name}"),
            "patch": self.op(
                "patch",
                f"patch{name}",
                parameters=[*self.common, _query("force", "boolean")],
                request_body=self.patch_body,
            ),
        }


def group_versions(registry: Registry) -> list[tuple[str, str]]:
    out = [("", "v1")]
    for group, versions in registry.groups().items():
        out.extend((group, v) for v in versions)
    return out


_Cached = tuple[list[ResourceType], Obj, str]
_documents: weakref.WeakKeyDictionary[Registry, dict[tuple[str, str], _Cached]] = (
    weakref.WeakKeyDictionary()
)
"""Per registry (cluster), (group, version) -> (the resource types it was built from, document,
hash). Holding the types keeps them alive, so comparing them by identity below cannot be fooled
by reused ids; a cluster's documents go with its registry."""


def document(registry: Registry, group: str, version: str) -> tuple[Obj, str]:
    """The group/version's document and its hash, rebuilt only when its resources changed (a
    CRD added, changed or removed replaces its ResourceType)."""
    served = registry.in_group_version(group, version)
    mine = _documents.setdefault(registry, {})
    cached = mine.get((group, version))
    if (
        cached is not None
        and len(cached[0]) == len(served)
        and all(a is b for a, b in zip(cached[0], served, strict=True))
    ):
        return cached[1], cached[2]
    doc = _doc(registry, group, version)
    digest = hashlib.sha512(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:64].upper()
    mine[(group, version)] = (served, doc, digest)
    return doc, digest


def root(registry: Registry) -> Obj:
    paths: Obj = {}
    for group, version in group_versions(registry):
        _, digest = document(registry, group, version)
        p = _gv_path(group, version)
        paths[p] = {"serverRelativeURL": f"/openapi/v3/{p}?hash={digest}"}
    return {"paths": paths}


def v2(registry: Registry) -> Obj:
    definitions: Obj = {}
    for group, version in group_versions(registry):
        definitions.update(_doc(registry, group, version)["components"]["schemas"])
    return {
        "swagger": "2.0",
        "info": {"title": "Kubernetes", "version": KUBE_VERSION["gitVersion"]},
        "paths": {},
        "definitions": json.loads(
            json.dumps(definitions).replace("#/components/schemas/", "#/definitions/")
        ),
    }
