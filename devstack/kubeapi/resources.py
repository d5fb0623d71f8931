"""The kinds the emulator serves: built-in kinds and the resources that CRDs add.

A `ResourceType` says everything the request path needs to know about one resource (group,
versions, plural, kind, scope, subresources, printer columns, schema).  The `Registry` is the
lookup table; `crds.py` adds and removes entries as CRDs come and go.  This module does no I/O
and holds no objects (see `store.py`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

ALL_VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]


@dataclass
class ResourceType:
    group: str
    versions: list[str]  # served versions, preferred first
    storage_version: str
    plural: str
    singular: str
    kind: str
    namespaced: bool
    short_names: list[str] = field(default_factory=list)
    categories: list[str] = field(default_factory=list)
    status_subresource: bool = False
    scale_subresource: bool = False
    builtin: bool = True  # built-in kinds accept strategic merge patch; CRs answer 415
    has_generation: bool = True  # kinds whose metadata.generation the apiserver maintains
    return_deleted_object: bool = False  # DELETE answers the object, not a Status
    # CRD-only: per version: openAPIV3Schema, additionalPrinterColumns, subresources
    schemas: dict[str, dict[str, Any] | None] = field(default_factory=dict)
    printer_columns: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    version_subresources: dict[str, dict[str, Any]] = field(default_factory=dict)
    selectable_fields: dict[str, list[str]] = field(default_factory=dict)  # version -> jsonPaths
    crd_name: str | None = None
    storage_key: str | None = None
    """Set for a resource served from another one's objects (events.k8s.io Events are the
    core Events): that resource's key."""

    @property
    def key(self) -> str:
        """The storage key prefix: one per stored resource, whatever the version asked for."""
        return self.storage_key or self.resource_id

    @property
    def resource_id(self) -> str:
        """`group/plural`: how the registry knows it."""
        return f"{self.group}/{self.plural}"

    @property
    def group_resource(self) -> str:
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def list_kind(self) -> str:
        return f"{self.kind}List"

    def api_version(self, version: str) -> str:
        return f"{self.group}/{version}" if self.group else version

    def has_status(self, version: str) -> bool:
        if self.builtin:
            return self.status_subresource
        return "status" in self.version_subresources.get(version, {})

    def has_scale(self, version: str) -> bool:
        if self.builtin:
            return self.scale_subresource
        return "scale" in self.version_subresources.get(version, {})


@dataclass(frozen=True)
class _Builtin:
    """A built-in kind as kube-apiserver serves it (in one version; singular: the kind in lower
    case)."""

    api_version: str
    kind: str
    plural: str
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    namespaced: bool = True
    status: bool = False
    scale: bool = False
    generation: bool = False
    """Whether the apiserver maintains metadata.generation."""
    return_deleted: bool = False
    """Whether DELETE answers the object rather than a Status."""
    storage_key: str | None = None

    def resource_type(self) -> ResourceType:
        group, _, version = self.api_version.rpartition("/")
        return ResourceType(
            group=group,
            versions=[version],
            storage_version=version,
            plural=self.plural,
            singular=self.kind.lower(),
            kind=self.kind,
            namespaced=self.namespaced,
            short_names=list(self.short_names),
            categories=list(self.categories),
            status_subresource=self.status,
            scale_subresource=self.scale,
            has_generation=self.generation,
            return_deleted_object=self.return_deleted,
            storage_key=self.storage_key,
        )


_BUILTINS = (
    _Builtin(
        "v1", "Namespace", "namespaces", ("ns",), namespaced=False, status=True, return_deleted=True
    ),
    _Builtin("v1", "Secret", "secrets"),
    _Builtin("v1", "ConfigMap", "configmaps", ("cm",)),
    _Builtin(
        "v1",
        "Pod",
        "pods",
        ("po",),
        categories=("all",),
        status=True,
        generation=True,
        return_deleted=True,
    ),
    _Builtin("v1", "Event", "events", ("ev",)),
    _Builtin(
        "v1", "Service", "services", ("svc",), categories=("all",), status=True, return_deleted=True
    ),
    _Builtin("coordination.k8s.io/v1", "Lease", "leases"),
    _Builtin("events.k8s.io/v1", "Event", "events", ("ev",), storage_key="/events"),
    _Builtin(
        "apps/v1",
        "Deployment",
        "deployments",
        ("deploy",),
        categories=("all",),
        status=True,
        scale=True,
        generation=True,
    ),
    _Builtin(
        "apps/v1",
        "ReplicaSet",
        "replicasets",
        ("rs",),
        categories=("all",),
        status=True,
        scale=True,
        generation=True,
    ),
    _Builtin(
        "apiextensions.k8s.io/v1",
        "CustomResourceDefinition",
        "customresourcedefinitions",
        ("crd", "crds"),
        ("api-extensions",),
        namespaced=False,
        status=True,
        generation=True,
    ),
)


RBAC_GROUP = "rbac.authorization.k8s.io"
_ACCESS_BUILTINS = (
    _Builtin("v1", "ServiceAccount", "serviceaccounts", ("sa",)),
    _Builtin(f"{RBAC_GROUP}/v1", "Role", "roles"),
    _Builtin(f"{RBAC_GROUP}/v1", "RoleBinding", "rolebindings"),
    _Builtin(f"{RBAC_GROUP}/v1", "ClusterRole", "clusterroles", namespaced=False),
    _Builtin(f"{RBAC_GROUP}/v1", "ClusterRoleBinding", "clusterrolebindings", namespaced=False),
)
"""Served only with RBAC authorization (`KubeAPI(authorization="RBAC")`), so that the default
emulator's discovery stays what the devstack and its tests know."""


def builtin_resources() -> list[ResourceType]:
    return [b.resource_type() for b in _BUILTINS]


def access_resources() -> list[ResourceType]:
    """ServiceAccounts and the four RBAC kinds."""
    return [b.resource_type() for b in _ACCESS_BUILTINS]


class Registry:
    """Lookup of served resources by group/version/plural and by group/kind."""

    def __init__(self) -> None:
        self._by_key: dict[str, ResourceType] = {}
        for rt in builtin_resources():
            self.add(rt)

    def add(self, rt: ResourceType) -> None:
        self._by_key[rt.resource_id] = rt

    def remove(self, key: str) -> None:
        self._by_key.pop(key, None)

    def get(self, group: str, version: str, plural: str) -> ResourceType | None:
        rt = self._by_key.get(f"{group}/{plural}")
        if rt is None or version not in rt.versions:
            return None
        return rt

    def by_key(self, key: str) -> ResourceType | None:
        """The resource `group/plural` (for a stored resource, its storage key)."""
        return self._by_key.get(key)

    def by_kind(self, group: str, kind: str) -> ResourceType | None:
        for rt in self._by_key.values():
            if rt.group == group and rt.kind == kind:
                return rt
        return None

    def all(self) -> list[ResourceType]:
        """The stored resources, each once (not the views of another's objects)."""
        return [rt for rt in self._by_key.values() if rt.storage_key is None]

    def groups(self) -> dict[str, list[str]]:
        """group -> served versions (preferred first), in a stable order; core group excluded."""
        out: dict[str, list[str]] = {}
        for rt in self._by_key.values():
            if not rt.group:
                continue
            versions = out.setdefault(rt.group, [])
            for v in rt.versions:
                if v not in versions:
                    versions.append(v)
        for group, versions in out.items():
            out[group] = sorted(versions, key=version_priority_key)
        return out

    def in_group_version(self, group: str, version: str) -> list[ResourceType]:
        return [rt for rt in self._by_key.values() if rt.group == group and version in rt.versions]


def version_priority_key(version: str) -> tuple[int, int, int, str]:
    """Kubernetes version priority: GA > beta > alpha, higher numbers first, then others by name."""
    import re

    m = re.fullmatch(r"v(\d+)(?:(alpha|beta)(\d+))?", version)
    if not m:
        return (3, 0, 0, version)
    major = int(m.group(1))
    stage = {None: 0, "beta": 1, "alpha": 2}[m.group(2)]
    minor = int(m.group(3) or 0)
    return (stage, -major, -minor, version)
