"""RBAC without a server: how a request's path becomes attributes (kube's RequestInfoFactory) and
which rules match them (kube's RBAC authorizer), as tables of sentences."""

from __future__ import annotations

from typing import Any

import pytest
from multidict import MultiDict

from devstack.kubeapi.rbac import forbidden_message, rule_allows
from devstack.kubeapi.requestinfo import Attributes, User, request_info

BOB = User("bob", ("system:authenticated",))


def _info(method: str, url: str) -> Attributes:
    path, _, query = url.partition("?")
    pairs = [tuple(kv.split("=", 1)) for kv in query.split("&") if kv]
    return request_info(BOB, method, path, MultiDict(pairs))


REQUESTS = [
    ("GET", "/api/v1/namespaces/ns/pods/p", ("get", "ns", "", "pods", "", "p")),
    ("GET", "/api/v1/namespaces/ns/pods", ("list", "ns", "", "pods", "", "")),
    ("GET", "/api/v1/namespaces/ns/pods?watch=true", ("watch", "ns", "", "pods", "", "")),
    ("GET", "/api/v1/watch/namespaces/ns/pods", ("watch", "ns", "", "pods", "", "")),
    (
        "GET",
        "/api/v1/namespaces/ns/secrets?fieldSelector=metadata.name!=x",
        ("list", "ns", "", "secrets", "", ""),
    ),
    (
        "GET",
        "/api/v1/namespaces/ns/secrets?fieldSelector=metadata.name=x&watch=1",
        ("watch", "ns", "", "secrets", "", "x"),
    ),
    ("PUT", "/apis/apps/v1/namespaces/ns/deployments/d/scale", ("update", "ns", "apps")),
    ("DELETE", "/api/v1/namespaces/ns/pods", ("deletecollection", "ns", "", "pods", "", "")),
    ("POST", "/api/v1/namespaces/ns/pods", ("create", "ns", "", "pods", "", "")),
    ("GET", "/api/v1/namespaces/ns", ("get", "ns", "", "namespaces", "", "ns")),
    ("PUT", "/api/v1/namespaces/ns/finalize", ("update", "ns", "", "namespaces", "finalize", "ns")),
    ("GET", "/api/v1/nodes", ("list", "", "", "nodes", "", "")),
]
IDS = [
    "a GET of an object is get",
    "a GET of a collection is list",
    "watch=true makes it a watch",
    "the legacy watch prefix makes it a watch",
    "a metadata.name!= field selector names nothing",
    "a metadata.name field selector names the object of a watch",
    "the scale subresource of a deployment is apps",
    "a DELETE of a collection is deletecollection",
    "a POST is create, without a name",
    "a namespace is in its own namespace",
    "a namespace's finalize is its subresource",
    "a cluster-scoped collection has no namespace",
]


@pytest.mark.parametrize(("method", "url", "expected"), REQUESTS, ids=IDS)
def test_request_attributes(method: str, url: str, expected: tuple[str, ...]) -> None:
    a = _info(method, url)
    got = (a.verb, a.namespace, a.api_group, a.resource, a.subresource, a.name)
    assert a.resource_request
    assert got[: len(expected)] == expected


@pytest.mark.parametrize(
    "path", ["/api", "/api/v1", "/apis/apps/v1", "/version", "/openapi/v3/apis/apps/v1"]
)
def test_discovery_paths_are_non_resource_requests(path: str) -> None:
    a = _info("GET", path)
    assert (a.resource_request, a.verb, a.path) == (False, "get", path)


def _pods(verb: str, **kw: str) -> Attributes:
    return Attributes(BOB, verb, True, namespace="ns", resource="pods", **kw)


RULES: list[tuple[str, dict[str, Any], Attributes, bool]] = [
    ("star verbs allow any verb", {"verbs": ["*"]}, _pods("delete"), True),
    ("another verb is refused", {"verbs": ["get"]}, _pods("list"), False),
    ("another API group is refused", {"apiGroups": ["apps"]}, _pods("get"), False),
    ("a resource does not grant its status", {}, _pods("get", subresource="status"), False),
    (
        "resource/subresource grants the subresource",
        {"resources": ["pods/status"]},
        _pods("get", subresource="status"),
        True,
    ),
    (
        "resource/subresource does not grant the resource",
        {"resources": ["pods/status"]},
        _pods("get"),
        False,
    ),
    (
        "*/subresource grants it on any resource",
        {"resources": ["*/scale"]},
        _pods("get", subresource="scale"),
        True,
    ),
    (
        "resource/* is not a wildcard",
        {"resources": ["pods/*"]},
        _pods("get", subresource="x"),
        False,
    ),
    (
        "star resources grant subresources",
        {"resources": ["*"]},
        _pods("get", subresource="x"),
        True,
    ),
    ("a named object is granted", {"resourceNames": ["a"]}, _pods("get", name="a"), True),
    ("another name is refused", {"resourceNames": ["a"]}, _pods("get", name="b"), False),
    ("a list is not narrowed by names", {"resourceNames": ["a"]}, _pods("list"), False),
    (
        "a list selecting the name is",
        {"resourceNames": ["a"], "verbs": ["list"]},
        _pods("list", name="a"),
        True,
    ),
    ("a create has no name to match", {"resourceNames": ["a"]}, _pods("create"), False),
    (
        "a deletecollection has no name to match",
        {"resourceNames": ["a"]},
        _pods("deletecollection"),
        False,
    ),
]


@pytest.mark.parametrize(
    ("overrides", "attrs", "allowed"), [r[1:] for r in RULES], ids=[r[0] for r in RULES]
)
def test_resource_rules(overrides: dict[str, Any], attrs: Attributes, allowed: bool) -> None:
    rule = {"apiGroups": [""], "resources": ["pods"], "verbs": ["*"]} | overrides
    assert rule_allows(rule, attrs) is allowed


@pytest.mark.parametrize(
    ("url", "allowed"),
    [("/apis", True), ("/apis/apps/v1", True), ("/api", False), ("/version", False)],
    ids=["exact", "prefix with a star", "another path", "not listed"],
)
def test_non_resource_urls(url: str, allowed: bool) -> None:
    rule = {"nonResourceURLs": ["/apis", "/apis/*"], "verbs": ["get"]}
    assert rule_allows(rule, _info("GET", url)) is allowed


def test_non_resource_rules_do_not_grant_resources() -> None:
    assert not rule_allows({"nonResourceURLs": ["*"], "verbs": ["*"]}, _pods("get"))


@pytest.mark.parametrize(
    ("attrs", "message"),
    [
        (
            _pods("get", name="p"),
            'pods "p" is forbidden: User "bob" cannot get resource "pods" in API group "" in '
            'the namespace "ns"',
        ),
        (
            Attributes(BOB, "list", True, api_group="apps", resource="deployments"),
            'deployments.apps is forbidden: User "bob" cannot list resource "deployments" in API '
            'group "apps" at the cluster scope',
        ),
        (
            _pods("update", name="p", subresource="status"),
            'pods "p" is forbidden: User "bob" cannot update resource "pods/status" in API group '
            '"" in the namespace "ns"',
        ),
        (
            Attributes(BOB, "get", False, path="/metrics"),
            'forbidden: User "bob" cannot get path "/metrics"',
        ),
    ],
    ids=["namespaced object", "cluster scope", "subresource", "non-resource path"],
)
def test_forbidden_messages_are_kubes(attrs: Attributes, message: str) -> None:
    assert forbidden_message(attrs) == message
