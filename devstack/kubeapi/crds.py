"""CustomResourceDefinitions: validation, defaulting, status, and the `ResourceType` they serve.

A CRD is served as soon as it is stored (Established=True immediately); its custom resources
are stored once, in the storage version, and served in every served version with only
`apiVersion` changed (conversion strategy None; Webhook conversion is not implemented).
"""

from __future__ import annotations

from shared.api.meta import Obj

from . import schema
from .errors import Cause
from .resources import ResourceType, version_priority_key

CLEANUP_FINALIZER = "customresourcecleanup.apiextensions.k8s.io"


def prepare(crd: Obj, old: Obj | None, now: str) -> list[Cause]:
    """Validate a CRD (and, on update, its immutable fields); if valid, default it and set its
    status (accepted names, Established, stored versions). Returns the causes it is invalid."""
    spec = crd.setdefault("spec", {})
    names = spec.setdefault("names", {})
    causes = _check_names(crd["metadata"].get("name", ""), spec)
    if spec.get("scope") not in ("Namespaced", "Cluster"):
        causes.append(
            Cause(
                "FieldValueNotSupported",
                f'Unsupported value: "{spec.get("scope", "")}": supported values: "Cluster", '
                '"Namespaced"',
                "spec.scope",
            )
        )
    causes += _check_versions(spec.get("versions") or [])
    if old is not None:
        causes += _check_immutable(spec, old.get("spec") or {})
    if causes:
        return causes
    kind = names.get("kind") or ""
    names.setdefault("singular", kind.lower())
    names.setdefault("listKind", f"{kind}List")
    spec.setdefault("conversion", {"strategy": "None"})
    for v in spec.get("versions") or []:
        v.setdefault("served", True)
    crd["status"] = _status(spec, old, now)
    return []


def _check_names(name: str, spec: Obj) -> list[Cause]:
    causes: list[Cause] = []
    group = spec.get("group") or ""
    plural = spec["names"].get("plural") or ""
    if not group:
        causes.append(Cause("FieldValueRequired", "Required value", "spec.group"))
    elif "." not in group:
        causes.append(
            Cause(
                "FieldValueInvalid",
                f'Invalid value: "{group}": should be a domain with at least one dot',
                "spec.group",
            )
        )
    if not plural:
        causes.append(Cause("FieldValueRequired", "Required value", "spec.names.plural"))
    if not spec["names"].get("kind"):
        causes.append(Cause("FieldValueRequired", "Required value", "spec.names.kind"))
    if plural and group and name != f"{plural}.{group}":
        causes.append(
            Cause(
                "FieldValueInvalid",
                f'Invalid value: "{name}": must be spec.names.plural+"."+spec.group',
                "metadata.name",
            )
        )
    return causes


def _check_versions(versions: list[Obj]) -> list[Cause]:
    """Exactly one storage version, and structural schemas."""
    causes: list[Cause] = []
    if not versions:
        causes.append(
            Cause(
                "FieldValueInvalid",
                'Invalid value: "null": must have exactly one version marked as storage version',
                "spec.versions",
            )
        )
    elif sum(1 for v in versions if v.get("storage")) != 1:
        causes.append(
            Cause(
                "FieldValueInvalid",
                f"Invalid value: {_render_versions(versions)}: must have exactly one version "
                "marked as storage version",
                "spec.versions",
            )
        )
    for i, v in enumerate(versions):
        causes.extend(
            schema.check_structural(
                (v.get("schema") or {}).get("openAPIV3Schema"),
                f"spec.versions[{i}].schema.openAPIV3Schema",
            )
        )
    return causes


def _check_immutable(spec: Obj, ospec: Obj) -> list[Cause]:
    """The group, the plural and the scope never change."""
    fields = (
        (spec.get("group") or "", ospec.get("group"), "spec.group"),
        (
            spec["names"].get("plural") or "",
            (ospec.get("names") or {}).get("plural"),
            "spec.names.plural",
        ),
        (spec.get("scope"), ospec.get("scope"), "spec.scope"),
    )
    return [
        Cause("FieldValueInvalid", f'Invalid value: "{new}": field is immutable', path)
        for new, was, path in fields
        if new != was
    ]


def _status(spec: Obj, old: Obj | None, now: str) -> Obj:
    """Names accepted and Established at once; the storage version added to storedVersions."""
    storage = next(v["name"] for v in spec["versions"] if v.get("storage"))
    stored = list(((old or {}).get("status") or {}).get("storedVersions") or [])
    if storage not in stored:
        stored.append(storage)
    return {
        "conditions": [
            {
                "type": "NamesAccepted",
                "status": "True",
                "lastTransitionTime": now,
                "reason": "NoConflicts",
                "message": "no conflicts found",
            },
            {
                "type": "Established",
                "status": "True",
                "lastTransitionTime": now,
                "reason": "InitialNamesAccepted",
                "message": "the initial names have been accepted",
            },
        ],
        "acceptedNames": dict(spec["names"]),
        "storedVersions": stored,
    }


def _render_versions(versions: list[Obj]) -> str:
    return "[]apiextensions.CustomResourceDefinitionVersion{...}" if versions else "null"


def resource_type(crd: Obj) -> ResourceType:
    spec = crd["spec"]
    names = spec["names"]
    served = [v for v in spec["versions"] if v.get("served", True)]
    versions = sorted((v["name"] for v in served), key=version_priority_key)
    return ResourceType(
        group=spec["group"],
        versions=versions,
        storage_version=next(v["name"] for v in spec["versions"] if v.get("storage")),
        plural=names["plural"],
        singular=names.get("singular") or names["kind"].lower(),
        kind=names["kind"],
        namespaced=spec["scope"] == "Namespaced",
        short_names=list(names.get("shortNames") or []),
        categories=list(names.get("categories") or []),
        builtin=False,
        has_generation=True,
        return_deleted_object=True,
        schemas={v["name"]: (v.get("schema") or {}).get("openAPIV3Schema") for v in served},
        printer_columns={v["name"]: list(v.get("additionalPrinterColumns") or []) for v in served},
        version_subresources={v["name"]: dict(v.get("subresources") or {}) for v in served},
        selectable_fields={
            v["name"]: [f["jsonPath"] for f in v.get("selectableFields") or [] if "jsonPath" in f]
            for v in served
        },
        crd_name=crd["metadata"]["name"],
    )
