"""What a request asks to do, read from its method, path and query alone, as kube-apiserver's
`RequestInfoFactory` does before any routing: the attributes that authorization decides on.

A resource request is `/api/v1/...` or `/apis/<group>/<version>/...` with at least a resource;
everything else (`/version`, `/apis`, `/api/v1`, `/openapi/v3`) is a non-resource request whose
verb is the lower-cased HTTP method.  This module does not know which resources exist: an
unknown resource is authorised (or refused) like any other and only then answered 404, as in kube.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from multidict import MultiMapping

_VERBS = {"POST": "create", "GET": "get", "HEAD": "get", "PUT": "update", "PATCH": "patch"}
_VERBS["DELETE"] = "delete"
_NAMESPACE_SUBRESOURCES = frozenset({"status", "finalize"})
_TRUE = frozenset({"true", "1"})


@dataclass(frozen=True)
class User:
    """An authenticated (or impersonated) user."""

    name: str
    groups: tuple[str, ...] = ()
    uid: str = ""
    extra: tuple[tuple[str, tuple[str, ...]], ...] = ()

    def info(self) -> dict[str, Any]:
        """As `authentication.k8s.io/v1` UserInfo."""
        out: dict[str, Any] = {"username": self.name, "groups": list(self.groups)}
        if self.uid:
            out["uid"] = self.uid
        return out


@dataclass(frozen=True)
class Attributes:
    """One authorization question: may `user` do `verb` on this resource (or path)?"""

    user: User
    verb: str
    resource_request: bool
    path: str = ""
    namespace: str = ""
    api_group: str = ""
    api_version: str = ""
    resource: str = ""
    subresource: str = ""
    name: str = ""


def request_info(user: User, method: str, path: str, query: MultiMapping[str]) -> Attributes:
    parts = [p for p in path.strip("/").split("/") if p]
    verb = _VERBS.get(method, method.lower())
    if parts[:1] == ["api"] and len(parts) >= 3:
        group, version, rest = "", parts[1], parts[2:]
    elif parts[:1] == ["apis"] and len(parts) >= 4:
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        return Attributes(user, method.lower(), False, path=path)
    if rest[0] == "watch" and len(rest) >= 2:
        verb, rest = "watch", rest[1:]
    namespace = ""
    if rest[0] == "namespaces" and len(rest) > 1:
        namespace = rest[1]
        if len(rest) > 2 and rest[2] not in _NAMESPACE_SUBRESOURCES:
            rest = rest[2:]
    name = rest[1] if len(rest) >= 2 else ""
    subresource = rest[2] if len(rest) >= 3 else ""
    if not name and verb == "get":
        verb = "watch" if query.get("watch", "").lower() in _TRUE else "list"
        selector = query.get("fieldSelector", "")
        for term in selector.split(",") if selector else ():
            key, sep, value = term.partition("=")
            if key == "metadata.name" and sep and value.lstrip("="):
                name = value.lstrip("=")  # `metadata.name=x` or `==x`, the only term that names
    if not name and verb == "delete":
        verb = "deletecollection"
    return Attributes(
        user,
        verb,
        True,
        path=path,
        namespace=namespace,
        api_group=group,
        api_version=version,
        resource=rest[0],
        subresource=subresource,
        name=name,
    )
