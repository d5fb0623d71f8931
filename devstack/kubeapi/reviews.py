"""The access APIs that are not stored objects: TokenRequest (`POST
.../serviceaccounts/<name>/token`, what `kubectl create token` sends), SelfSubjectAccessReview
(`kubectl auth can-i VERB RESOURCE`), SelfSubjectRulesReview (`kubectl auth can-i --list`) and
SelfSubjectReview (`kubectl auth whoami`).

Each answers for the user the request was authenticated (or impersonated) as, with the RBAC
decision `rbac.py` makes for real requests, so `can-i` and the API never disagree.  Served only
in RBAC mode; `authorization.k8s.io` is not listed in discovery (kubectl does not look for it).
SubjectAccessReview (for another user), LocalSubjectAccessReview and TokenReview are not served.
"""

from __future__ import annotations

from datetime import UTC, datetime

from aiohttp import web

from shared.api.meta import Obj

from . import errors, rbac
from .access import SERVICE_ACCOUNTS, Access
from .requestinfo import Attributes, User
from .tokens import DEFAULT_AUDIENCES, DEFAULT_EXPIRATION, MIN_EXPIRATION, Claims
from .wire import json_response, read_body

AUTHORIZATION_V1 = "authorization.k8s.io/v1"
AUTHENTICATION_V1 = "authentication.k8s.io/v1"
_REVIEWS = ("selfsubjectaccessreviews", "selfsubjectrulesreviews")


async def answer(
    access: Access, request: web.Request, attrs: Attributes, *, now: int
) -> web.Response | None:
    """The response for a request this module serves, else None."""
    if not access.rbac or not attrs.resource_request or attrs.verb != "create":
        return None
    if (attrs.api_group, attrs.resource, attrs.subresource) == ("", "serviceaccounts", "token"):
        return token_request(access, attrs, await read_body(request), now=now)
    group_version = f"{attrs.api_group}/{attrs.api_version}"
    if (group_version, attrs.resource, attrs.name) == (AUTHENTICATION_V1, "selfsubjectreviews", ""):
        await read_body(request)
        return _whoami(attrs.user)
    if group_version == AUTHORIZATION_V1 and not attrs.name:
        if attrs.resource == _REVIEWS[0]:
            return access_review(access, attrs.user, await read_body(request))
        if attrs.resource == _REVIEWS[1]:
            return rules_review(access, attrs.user, await read_body(request))
    return None


def _whoami(user: User) -> web.Response:
    """SelfSubjectReview (`kubectl auth whoami`): the user the request was authenticated (or
    impersonated) as."""
    out = {
        "kind": "SelfSubjectReview",
        "apiVersion": AUTHENTICATION_V1,
        "metadata": {"creationTimestamp": None},
        "status": {"userInfo": user.info()},
    }
    return json_response(out, 201)


def _timestamp(unix: int) -> str:
    return datetime.fromtimestamp(unix, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def token_request(access: Access, attrs: Attributes, body: Obj, *, now: int) -> web.Response:
    sa = access.ops.store.peek(SERVICE_ACCOUNTS, attrs.namespace, attrs.name)
    if sa is None:
        raise errors.not_found("serviceaccounts", "", attrs.name)
    spec = dict(body.get("spec") or {})
    seconds = spec.get("expirationSeconds") or DEFAULT_EXPIRATION
    if not isinstance(seconds, int) or seconds < MIN_EXPIRATION:
        cause = errors.Cause(
            "FieldValueInvalid",
            f"Invalid value: {seconds}: may not specify a duration less than 10 minutes",
            "spec.expirationSeconds",
        )
        raise errors.invalid("TokenRequest", "authentication.k8s.io", attrs.name, [cause])
    audiences = list(spec.get("audiences") or DEFAULT_AUDIENCES)
    claims = Claims(attrs.namespace, attrs.name, sa["metadata"]["uid"], now + seconds)
    token = access.signer.issue(claims, audiences=audiences, now=now)
    spec.update(audiences=audiences, expirationSeconds=seconds)
    spec.setdefault("boundObjectRef", None)
    out = {
        "kind": "TokenRequest",
        "apiVersion": AUTHENTICATION_V1,
        "metadata": {
            "name": attrs.name,
            "namespace": attrs.namespace,
            "creationTimestamp": _timestamp(now),
        },
        "spec": spec,
        "status": {"token": token, "expirationTimestamp": _timestamp(claims.expires)},
    }
    return json_response(out, 201)


def _review(kind: str, spec: Obj, status: Obj) -> web.Response:
    out = {
        "kind": kind,
        "apiVersion": AUTHORIZATION_V1,
        "metadata": {"creationTimestamp": None},
        "spec": spec,
        "status": status,
    }
    return json_response(out, 201)


def access_review(access: Access, user: User, body: Obj) -> web.Response:
    spec = body.get("spec") or {}
    res, non = spec.get("resourceAttributes"), spec.get("nonResourceAttributes")
    if isinstance(res, dict):
        attrs = Attributes(
            user,
            res.get("verb", ""),
            True,
            namespace=res.get("namespace", ""),
            api_group=res.get("group", ""),
            api_version=res.get("version", ""),
            resource=res.get("resource", ""),
            subresource=res.get("subresource", ""),
            name=res.get("name", ""),
        )
    elif isinstance(non, dict):
        attrs = Attributes(user, non.get("verb", ""), False, path=non.get("path", ""))
    else:
        cause = errors.Cause(
            "FieldValueRequired",
            "Required value: exactly one of nonResourceAttributes or resourceAttributes must be "
            "specified",
            "spec.resourceAttributes",
        )
        raise errors.invalid("SelfSubjectAccessReview", "authorization.k8s.io", "", [cause])
    allowed, reason = rbac.authorize(access.ops.store, attrs)
    status: Obj = {"allowed": allowed}
    if reason:
        status["reason"] = reason
    return _review("SelfSubjectAccessReview", spec, status)


def _rule(rule: Obj) -> tuple[str, Obj]:
    """("resource" | "nonResource", the rule as SubjectRulesReview lists it)."""
    if rule.get("nonResourceURLs"):
        return "nonResource", {"verbs": rule["verbs"], "nonResourceURLs": rule["nonResourceURLs"]}
    keys = ("verbs", "apiGroups", "resources", "resourceNames")
    return "resource", {k: rule[k] for k in keys if rule.get(k)}


def rules_review(access: Access, user: User, body: Obj) -> web.Response:
    spec = body.get("spec") or {}
    namespace = spec.get("namespace") or ""
    if not namespace:
        raise errors.bad_request("no namespace on request")
    errs: list[str] = []
    found: dict[str, list[Obj]] = {"resource": [], "nonResource": []}
    for grant in rbac.grants(access.ops.store, user, namespace, errs):
        for rule in grant.rules:
            kind, shown = _rule(rule)
            found[kind].append(shown)
    status: Obj = {
        "resourceRules": found["resource"],
        "nonResourceRules": found["nonResource"],
        "incomplete": False,
    }
    if errs:
        status["evaluationError"] = ", ".join(errs)
    return _review("SelfSubjectRulesReview", spec, status)
