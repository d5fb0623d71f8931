"""Discovery documents: `/version`, `/api`, `/apis`, `/api/v1`, `/apis/<g>`, `/apis/<g>/<v>`, and
the aggregated `apidiscovery.k8s.io/v2` form of `/api` and `/apis` when the client asks for it
in its Accept header (kubectl and client-go do; others get the legacy documents).
"""

from __future__ import annotations

import hashlib

from shared.api.meta import Obj

from .resources import ALL_VERBS, Registry, ResourceType

KUBE_VERSION = {"major": "1", "minor": "37", "gitVersion": "v1.37.0"}
AGGREGATED_V2 = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"


def version_info() -> Obj:
    return {
        "major": KUBE_VERSION["major"],
        "minor": KUBE_VERSION["minor"],
        "emulationMajor": KUBE_VERSION["major"],
        "emulationMinor": KUBE_VERSION["minor"],
        "minCompatibilityMajor": KUBE_VERSION["major"],
        "minCompatibilityMinor": str(int(KUBE_VERSION["minor"]) - 1),
        "gitVersion": KUBE_VERSION["gitVersion"],
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2026-01-01T00:00:00Z",
        "goVersion": "go1.25.0",
        "compiler": "gc",
        "platform": "linux/amd64",
    }


def wants_aggregated(accept: str) -> bool:
    for part in accept.split(","):
        params = {p.strip() for p in part.split(";")}
        if (
            "g=apidiscovery.k8s.io" in params
            and "v=v2" in params
            and "as=APIGroupDiscoveryList" in params
        ):
            return True
    return False


def _hash(rt: ResourceType) -> str:
    return hashlib.sha256(f"{rt.group}/{rt.storage_version}/{rt.kind}".encode()).hexdigest()[:11]


def api_versions(server_address: str) -> Obj:
    return {
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [
            {"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}
        ],
    }


def _group(name: str, versions: list[str]) -> Obj:
    gvs = [{"groupVersion": f"{name}/{v}", "version": v} for v in versions]
    return {"name": name, "versions": gvs, "preferredVersion": gvs[0]}


def api_group_list(registry: Registry) -> Obj:
    return {
        "kind": "APIGroupList",
        "apiVersion": "v1",
        "groups": [_group(g, vs) for g, vs in registry.groups().items()],
    }


def api_group(registry: Registry, group: str) -> Obj | None:
    versions = registry.groups().get(group)
    if not versions:
        return None
    return {"kind": "APIGroup", "apiVersion": "v1", **_group(group, versions)}


def resource_list(registry: Registry, group: str, version: str) -> Obj:
    resources: list[Obj] = []
    for rt in sorted(registry.in_group_version(group, version), key=lambda r: r.plural):
        entry: Obj = {
            "name": rt.plural,
            "singularName": rt.singular,
            "namespaced": rt.namespaced,
            "kind": rt.kind,
            "verbs": ALL_VERBS,
            "storageVersionHash": _hash(rt),
        }
        if rt.short_names:
            entry["shortNames"] = rt.short_names
        if rt.categories:
            entry["categories"] = rt.categories
        resources.append(entry)
        if rt.has_status(version):
            resources.append(
                {
                    "name": f"{rt.plural}/status",
                    "singularName": "",
                    "namespaced": rt.namespaced,
                    "kind": rt.kind,
                    "verbs": ["get", "patch", "update"],
                }
            )
        if rt.has_scale(version):
            resources.append(
                {
                    "name": f"{rt.plural}/scale",
                    "singularName": "",
                    "namespaced": rt.namespaced,
                    "group": "autoscaling",
                    "version": "v1",
                    "kind": "Scale",
                    "verbs": ["get", "patch", "update"],
                }
            )
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": f"{group}/{version}" if group else version,
        "resources": resources,
    }


def _aggregated_version(registry: Registry, group: str, version: str) -> Obj:
    resources: list[Obj] = []
    for rt in sorted(registry.in_group_version(group, version), key=lambda r: r.plural):
        entry: Obj = {
            "resource": rt.plural,
            "responseKind": {"group": group, "version": version, "kind": rt.kind},
            "scope": "Namespaced" if rt.namespaced else "Cluster",
            "singularResource": rt.singular,
            "verbs": ALL_VERBS,
        }
        if rt.short_names:
            entry["shortNames"] = rt.short_names
        if rt.categories:
            entry["categories"] = rt.categories
        subs: list[Obj] = []
        if rt.has_status(version):
            subs.append(
                {
                    "subresource": "status",
                    "responseKind": {"group": group, "version": version, "kind": rt.kind},
                    "verbs": ["get", "patch", "update"],
                }
            )
        if rt.has_scale(version):
            subs.append(
                {
                    "subresource": "scale",
                    "responseKind": {"group": "autoscaling", "version": "v1", "kind": "Scale"},
                    "verbs": ["get", "patch", "update"],
                }
            )
        if subs:
            entry["subresources"] = subs
        resources.append(entry)
    return {"version": version, "resources": resources, "freshness": "Current"}


def aggregated(registry: Registry, legacy: bool) -> Obj:
    items: list[Obj] = []
    if legacy:
        items.append(
            {
                "metadata": {"creationTimestamp": None},
                "versions": [_aggregated_version(registry, "", "v1")],
            }
        )
    else:
        for group, versions in registry.groups().items():
            items.append(
                {
                    "metadata": {"name": group, "creationTimestamp": None},
                    "versions": [_aggregated_version(registry, group, v) for v in versions],
                }
            )
    return {
        "kind": "APIGroupDiscoveryList",
        "apiVersion": "apidiscovery.k8s.io/v2",
        "metadata": {},
        "items": items,
    }
