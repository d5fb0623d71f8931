"""Which Kubernetes resources we talk to, and where their REST paths are.

A `Resource` is the (group, version, plural) triple that addresses a collection, as client-go's
`GroupVersionResource`, plus the kind and whether it is namespaced. The client builds every URL
from it, so core kinds and custom resources go through one code path. No discovery: the
resources the services use are known in advance, and discovery would add a round trip and a
failure mode to every start.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote

from shared.api import v1alpha2

__all__ = [
    "CONFIG_MAPS",
    "CUSTOM_RESOURCE_DEFINITIONS",
    "DEPLOYMENTS",
    "EVENTS",
    "ISSUED_CERTIFICATES",
    "NAMESPACES",
    "PODS",
    "POD_BOUNCE_DIRECTIVES",
    "SECRETS",
    "Resource",
]


def _segment(value: str) -> str:
    if not value or "/" in value:
        raise ValueError(f"{value!r} cannot be a path segment of a Kubernetes URL")
    return quote(value, safe="")


@dataclass(frozen=True, slots=True)
class Resource:
    """A collection of the API: `group`/`version`, its lower-case `plural`, and its `kind`."""

    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool = True

    @property
    def api_version(self) -> str:
        """`v1` for the core group, else `group/version`."""
        return f"{self.group}/{self.version}" if self.group else self.version

    def path(
        self,
        *,
        namespace: str | None = None,
        name: str | None = None,
        subresource: str | None = None,
    ) -> str:
        """The URL path of the collection, one object, or one object's subresource."""
        root = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        parts = [root]
        if self.namespaced and namespace:
            parts.append(f"namespaces/{_segment(namespace)}")
        elif not self.namespaced and namespace:
            raise ValueError(f"{self.kind} is cluster-scoped; it has no namespace")
        parts.append(self.plural)
        if name is not None:
            parts.append(_segment(name))
            if subresource is not None:
                parts.append(_segment(subresource))
        elif subresource is not None:
            raise ValueError("a subresource needs an object name")
        return "/".join(parts)


NAMESPACES = Resource("", "v1", "namespaces", "Namespace", namespaced=False)
SECRETS = Resource("", "v1", "secrets", "Secret")
CONFIG_MAPS = Resource("", "v1", "configmaps", "ConfigMap")
PODS = Resource("", "v1", "pods", "Pod")
EVENTS = Resource("", "v1", "events", "Event")
DEPLOYMENTS = Resource("apps", "v1", "deployments", "Deployment")
CUSTOM_RESOURCE_DEFINITIONS = Resource(
    "apiextensions.k8s.io",
    "v1",
    "customresourcedefinitions",
    "CustomResourceDefinition",
    namespaced=False,
)
ISSUED_CERTIFICATES = Resource(
    v1alpha2.GROUP,
    v1alpha2.VERSION,
    v1alpha2.IssuedCertificate.PLURAL,
    v1alpha2.IssuedCertificate.KIND,
)
POD_BOUNCE_DIRECTIVES = Resource(
    v1alpha2.GROUP,
    v1alpha2.VERSION,
    v1alpha2.PodBounceDirective.PLURAL,
    v1alpha2.PodBounceDirective.KIND,
)
