"""The write path shared by create, update and patch, as a pipeline of named steps over one
`Write`: decoding, where the object lives and what it is called, the uid and resourceVersion
rules, server-owned metadata, admission (namespace lifecycle, a terminating CRD), defaulting and
validation (built-in kinds, CRDs, custom resources' schemas, `fieldValidation`), generation,
managed fields, and finally dry run or storage.

`CREATE` and `UPDATE` name the steps of each verb in the order kube-apiserver takes them (the
order decides which error a bad request gets); a patch is an update of the patched object
(`from_patch`). Each step reads and changes the `Write`, or raises an `ApiError`.

Not here: the verbs' signatures (operations.py), deletion (deletion.py), HTTP (server.py).
"""

from __future__ import annotations

import copy
import json
import secrets
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from shared.api.meta import Obj

from . import defaulting, errors, events, managedfields, validation
from .errors import Cause
from .resources import ResourceType

if TYPE_CHECKING:
    from .context import Context
    from .operations import Operations


_GENERATE_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # k8s.io/apimachinery/pkg/util/rand
_SERVER_FIELDS = (
    "uid",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "generation",
)
"""Metadata only the server sets: dropped from a create's body, kept from the stored object on
an update."""


@dataclass
class Write:
    """One create or update on its way to the store."""

    rt: ResourceType
    version: str
    namespace: str
    ctx: Context
    body: Any
    """What the client sent (a patch: the patched object)."""
    name: str = ""
    old: Obj | None = None
    """The stored object an update replaces; None for a create."""
    subresource: str | None = None
    from_patch: bool = False
    managed: list[Obj] | None = None
    """Managed fields already computed (server-side apply), instead of recording an update."""
    obj: Obj | None = None
    """The object as it will be stored, once decoded."""

    @property
    def new(self) -> Obj:
        assert self.obj is not None, "decoded"
        return self.obj

    @property
    def stored(self) -> Obj:
        assert self.old is not None, "an update"
        return self.old

    @property
    def md(self) -> Obj:
        md: Obj = self.new["metadata"]
        return md

    @property
    def scope(self) -> str:
        """The namespace the store keys the object under ("" when cluster-scoped)."""
        return self.namespace if self.rt.namespaced else ""


Step = Callable[["Operations", Write], None]


def run(ops: Operations, w: Write, steps: Sequence[Step]) -> None:
    for step in steps:
        step(ops, w)


def random_suffix(n: int = 5) -> str:
    return "".join(secrets.choice(_GENERATE_ALPHABET) for _ in range(n))


# --- decoding ----------------------------------------------------------------------------------


def require_object(ops: Operations, w: Write) -> None:
    if not isinstance(w.body, dict):
        raise errors.bad_request("the body of the request was not a JSON object")


def load_stored(ops: Operations, w: Write) -> None:
    w.old = existing(ops, w.rt, w.namespace, w.name)


def check_type_meta(ops: Operations, w: Write) -> None:
    """A body of another kind or group/version than the URL's is a 400, as decoding fails (a
    patch or a status write is not decoded as the kind: not checked)."""
    if w.old is not None and (w.subresource is not None or w.from_patch):
        return
    rt, version = w.rt, w.version
    kind, api_version = w.body.get("kind"), w.body.get("apiVersion")
    if (kind and kind != rt.kind) or (api_version and api_version != rt.api_version(version)):
        raise errors.bad_request(
            f"the API version in the data ({api_version}) and kind ({kind}) do not match the "
            f"expected API version ({rt.api_version(version)}) and kind ({rt.kind})"
        )


def decode(ops: Operations, w: Write) -> None:
    """The object to store starts as the body, in the core form of its kind. A create's and a
    patch's body are copied (a patch's merged object may share parts with the stored one); a
    PUT's body was parsed for this request alone: it is ours to change."""
    obj = copy.deepcopy(w.body) if w.old is None or w.from_patch else w.body
    if w.rt.group == events.GROUP:
        obj = events.to_core(obj)
    w.obj = obj


# --- where the object lives and what it is called ----------------------------------------------


def place_new(ops: Operations, w: Write) -> None:
    """A create's namespace comes from the URL (a different one in the body is a 400); a
    resourceVersion is refused."""
    md = w.new.get("metadata")
    if not isinstance(md, dict):
        md = w.new["metadata"] = {}
    if w.rt.namespaced:
        if md.get("namespace") and md["namespace"] != w.namespace:
            raise _namespace_mismatch()
        md["namespace"] = w.namespace
    else:
        md.pop("namespace", None)
    if md.get("resourceVersion"):
        raise errors.bad_request("resourceVersion should not be set on objects to be created")


def name_new(ops: Operations, w: Write) -> None:
    """The name, or one generated from `generateName` (a free one, as far as 20 tries go)."""
    rt, md = w.rt, w.md
    if not md.get("name"):
        prefix = md.get("generateName")
        if not prefix:
            cause = Cause(
                "FieldValueRequired",
                "Required value: name or generateName is required",
                "metadata.name",
            )
            raise errors.invalid(rt.kind, rt.group, "", [cause])
        prefix = prefix[:58]
        for _ in range(20):
            candidate = prefix + random_suffix()
            if ops.store.peek(rt.key, md.get("namespace", ""), candidate) is None:
                md["name"] = candidate
                break
    w.name = md["name"]


def match_url(ops: Operations, w: Write) -> None:
    """An update's body names the object of the URL, in the URL's namespace, if it says."""
    imd = w.new.get("metadata")
    imd = imd if isinstance(imd, dict) else {}
    if imd.get("name") and imd["name"] != w.name:
        raise errors.bad_request(
            f"the name of the object ({imd['name']}) does not match the name on the URL ({w.name})"
        )
    if w.rt.namespaced and imd.get("namespace") and imd["namespace"] != w.namespace:
        raise _namespace_mismatch()


def _namespace_mismatch() -> errors.ApiError:
    return errors.bad_request(
        "the namespace of the provided object does not match the namespace sent on the request"
    )


# --- admission ---------------------------------------------------------------------------------


def admit_namespace(ops: Operations, w: Write) -> None:
    """The namespace must exist; a terminating one takes no new objects."""
    rt, namespace = w.rt, w.namespace
    if not rt.namespaced:
        return
    ns = ops.store.peek("/namespaces", "", namespace)
    if ns is None:
        raise errors.not_found("namespaces", "", namespace)
    if ns["metadata"].get("deletionTimestamp"):
        raise errors.forbidden(
            rt.plural,
            rt.group,
            w.name,
            f"unable to create new content in namespace {namespace} because it is being terminated",
        )


def admit_custom_resource(ops: Operations, w: Write) -> None:
    rt = w.rt
    if rt.builtin or not rt.crd_name:
        return
    crd = ops.store.peek("apiextensions.k8s.io/customresourcedefinitions", "", rt.crd_name)
    if crd is not None and crd["metadata"].get("deletionTimestamp"):
        raise errors.ApiError(
            405,
            "MethodNotAllowed",
            "create not allowed while custom resource definition is terminating",
            {},
        )


# --- uid and resourceVersion -------------------------------------------------------------------


def check_resource_version(ops: Operations, w: Write) -> None:
    """Optimistic concurrency: a resourceVersion sent must be the stored one (409); a custom
    resource's PUT must send one."""
    rt = w.rt
    imd = w.new.get("metadata")
    rv = imd.get("resourceVersion") if isinstance(imd, dict) else None
    if rv:
        if rv != w.stored["metadata"]["resourceVersion"]:
            raise errors.conflict(rt.plural, rt.group, w.name)
    elif not rt.builtin and not w.from_patch:
        cause = Cause(
            "FieldValueInvalid",
            "Invalid value: 0x0: must be specified for an update",
            "metadata.resourceVersion",
        )
        raise errors.invalid(rt.kind, rt.group, w.name, [cause])


def check_uid(ops: Operations, w: Write) -> None:
    """rest.BeforeUpdate keeps the stored uid only when none is sent; another is refused."""
    imd = w.new.get("metadata")
    uid = imd.get("uid") if isinstance(imd, dict) else None
    if uid and uid != w.stored["metadata"]["uid"]:
        immutable = validation.invalid("metadata.uid", uid, "field is immutable")
        raise errors.invalid(w.rt.kind, w.rt.group, w.name, [immutable])


# --- server-owned metadata ---------------------------------------------------------------------


def drop_server_fields(ops: Operations, w: Write) -> None:
    for f in (*_SERVER_FIELDS, "selfLink", "managedFields"):
        w.md.pop(f, None)


def split_status(ops: Operations, w: Write) -> None:
    """The status subresource writes only the status; the main resource of a kind with a
    status subresource never does (a create's status is set by `prepare`)."""
    rt, incoming = w.rt, w.new
    if w.old is None:
        if rt.has_status(w.version):
            incoming.pop("status", None)
        return
    old = w.old
    imd = incoming.get("metadata")
    if w.subresource == "status":
        # Shallow: stored objects are never changed in place, and later steps write only the
        # top level and the metadata (copied).
        new = dict(old)
        new["metadata"] = dict(old["metadata"])
        if "status" in incoming:
            new["status"] = incoming["status"]
        else:
            new.pop("status", None)
        w.obj = new
        return
    incoming["metadata"] = dict(imd) if isinstance(imd, dict) else {}
    if rt.has_status(w.version) and w.subresource is None:
        if "status" in old:
            incoming["status"] = old["status"]  # shared with the stored version, unchanged
        else:
            incoming.pop("status", None)


def keep_server_fields(ops: Operations, w: Write) -> None:
    """An update keeps the stored name, uid, timestamps, generation and resourceVersion."""
    nmd, omd = w.md, w.stored["metadata"]
    for f in ("name", *_SERVER_FIELDS):
        if f in omd:
            nmd[f] = omd[f]
        else:
            nmd.pop(f, None)
    if w.rt.namespaced:
        nmd["namespace"] = w.namespace
    else:
        nmd.pop("namespace", None)
    nmd["resourceVersion"] = omd["resourceVersion"]
    nmd.pop("selfLink", None)


def set_type_meta(ops: Operations, w: Write) -> None:
    """Stored in the storage version."""
    w.new["apiVersion"] = w.rt.api_version(w.rt.storage_version)
    w.new["kind"] = w.rt.kind


def forbid_new_finalizers(ops: Operations, w: Write) -> None:
    omd = w.stored["metadata"]
    if not omd.get("deletionTimestamp"):
        return
    added = set(w.md.get("finalizers") or []) - set(omd.get("finalizers") or [])
    if added:
        cause = Cause(
            "FieldValueForbidden",
            "Forbidden: no new finalizers can be added if the object is being deleted, found "
            "new finalizers " + json.dumps(sorted(added)),
            "metadata.finalizers",
        )
        raise errors.invalid(w.rt.kind, w.rt.group, w.name, [cause])


# --- defaulting and validation -----------------------------------------------------------------


def validate(ops: Operations, w: Write) -> None:
    """Prune, default and validate: the whole object, or a status write's custom resource
    against its schema (a built-in kind's status is not validated)."""
    rt = w.rt
    if w.subresource != "status":
        defaulting.validate_common(ops, rt, w.version, w.new, w.old, w.ctx)
    elif not rt.builtin:
        causes = defaulting.custom_resource(rt, w.version, w.new, w.ctx, w.old)
        if causes:
            raise errors.invalid(rt.kind, rt.group, w.name, causes)


# --- identity, generation, managed fields ------------------------------------------------------


def refuse_existing(ops: Operations, w: Write) -> None:
    if ops.store.peek(w.rt.key, w.md.get("namespace", ""), w.name) is not None:
        raise errors.already_exists(w.rt.plural, w.rt.group, w.name)


def allocate_cluster_ip(ops: Operations, w: Write) -> None:
    """A free address of the service CIDR 10.96.0.0/12 (from 10.96.0.1, which the
    `kubernetes` Service gets) for a Service that asks for none; `None` stays headless."""
    if not (w.rt.builtin and w.rt.kind == "Service"):
        return
    spec = w.new["spec"]
    if spec.get("type") == "ExternalName" or spec.get("clusterIP"):
        if spec.get("clusterIP"):
            spec.setdefault("clusterIPs", [spec["clusterIP"]])
        return
    used = {(o.get("spec") or {}).get("clusterIP") for o in ops.store.objects_of("/services")}
    n = 1
    while (ip := f"10.96.{n // 256}.{n % 256}") in used or n % 256 in (0, 255):
        n += 1
    spec["clusterIP"] = ip
    spec["clusterIPs"] = [ip]


def stamp_identity(ops: Operations, w: Write) -> None:
    """A new object's uid, creationTimestamp and first generation."""
    md = w.md
    md["uid"] = str(uuid.uuid4())
    md["creationTimestamp"] = ops.clock()
    if w.rt.has_generation:
        md["generation"] = 1


def bump_generation(ops: Operations, w: Write) -> None:
    """A change of the spec (of everything but metadata and, with a status subresource, the
    status) is a new generation."""
    rt, omd = w.rt, w.stored["metadata"]
    if rt.has_generation and "generation" in omd:
        include_status = not rt.has_status(w.version)
        if _spec_part(w.new, include_status) != _spec_part(w.stored, include_status):
            w.md["generation"] = omd["generation"] + 1


def _spec_part(obj: Obj, include_status: bool) -> Obj:
    return {k: v for k, v in obj.items() if k != "metadata" and (include_status or k != "status")}


def record_managed_fields(ops: Operations, w: Write) -> None:
    md = w.md
    if w.managed is not None:
        md["managedFields"] = w.managed
    else:
        md["managedFields"] = managedfields.record_update(
            (w.old or {}).get("metadata", {}).get("managedFields"),
            manager=w.ctx.manager,
            api_version=w.rt.api_version(w.version),
            now=md["creationTimestamp"] if w.old is None else ops.clock(),
            old=w.old,
            new=w.new,
            subresource=w.subresource,
        )
    if not md["managedFields"]:
        md.pop("managedFields")


CREATE: Sequence[Step] = (
    require_object,
    check_type_meta,
    decode,
    place_new,
    name_new,
    admit_namespace,
    admit_custom_resource,
    drop_server_fields,
    set_type_meta,
    split_status,
    validate,
    refuse_existing,
    allocate_cluster_ip,
    stamp_identity,
    record_managed_fields,
)
UPDATE: Sequence[Step] = (
    require_object,
    load_stored,
    check_type_meta,
    decode,
    match_url,
    check_resource_version,
    check_uid,
    split_status,
    keep_server_fields,
    set_type_meta,
    forbid_new_finalizers,
    validate,
    bump_generation,
    record_managed_fields,
)


# --- reads the steps share with the other verbs ------------------------------------------------


def existing(ops: Operations, rt: ResourceType, namespace: str, name: str) -> Obj:
    obj = ops.store.peek(rt.key, namespace if rt.namespaced else "", name)
    if obj is None:
        raise errors.not_found(rt.plural, rt.group, name)
    return obj
