"""Who is asking, and may they: authentication, impersonation and authorization of a request.

Two modes, as kube-apiserver's `--authorization-mode`:
- `AlwaysAllow` (the default): with a token configured, a request must carry it (else 401),
  and then may do anything; without one, anyone may.  This is the emulator as the devstack and
  its tests have always used it.
- `RBAC`: the admin token (always set: one is generated if none is given) authenticates the
  user `kubernetes-admin` in the group `system:masters`; a ServiceAccount token (`tokens.py`)
  authenticates `system:serviceaccount:<ns>:<name>` in `system:serviceaccounts`,
  `system:serviceaccounts:<ns>` and `system:authenticated`, while that ServiceAccount exists with
  the uid it was issued for.  Anything else is 401.  Then `Impersonate-User`/`Impersonate-Group`
  are honoured if the caller may `impersonate` them, and the (possibly impersonated) user's
  request is authorised by `rbac.py`; a refusal is kube's 403.  The bootstrap ClusterRoles and
  bindings that kubectl needs (`cluster-admin`, `system:discovery`, `system:basic-user`,
  `system:public-info-viewer`) are created at start, as kube-apiserver's RBAC post-start hook
  does.
The health and version endpoints (`server.PUBLIC_PATHS`) need no credentials in either mode
(kube's `system:public-info-viewer` grants them to anonymous users).  Not done: anonymous
requests elsewhere, client certificates, OIDC, webhook, ABAC, Node authorization.
"""

from __future__ import annotations

from aiohttp import web

from shared.api.meta import Obj

from . import errors, rbac
from .operations import Context, Operations
from .requestinfo import Attributes, User, request_info
from .resources import RBAC_GROUP
from .tokens import Signer

ALWAYS_ALLOW = "AlwaysAllow"
RBAC = "RBAC"
MODES = (ALWAYS_ALLOW, RBAC)
AUTHENTICATED = "system:authenticated"
UNAUTHENTICATED = "system:unauthenticated"
ADMIN = User("kubernetes-admin", ("system:masters", AUTHENTICATED))
ANONYMOUS = User("system:anonymous", (UNAUTHENTICATED,))
SERVICE_ACCOUNTS = "/serviceaccounts"

_DISCOVERY_URLS = ["/api", "/api/*", "/apis", "/apis/*", "/openapi", "/openapi/*"]
_PUBLIC_URLS = ["/healthz", "/livez", "/readyz", "/version", "/version/"]
BOOTSTRAP: tuple[tuple[str, list[Obj], list[str]], ...] = (
    (
        "cluster-admin",
        [
            {"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]},
            {"nonResourceURLs": ["*"], "verbs": ["*"]},
        ],
        ["system:masters"],
    ),
    (
        "system:discovery",
        [{"nonResourceURLs": _DISCOVERY_URLS + _PUBLIC_URLS, "verbs": ["get"]}],
        [AUTHENTICATED],
    ),
    (
        "system:basic-user",
        [
            {
                "apiGroups": ["authorization.k8s.io"],
                "resources": ["selfsubjectaccessreviews", "selfsubjectrulesreviews"],
                "verbs": ["create"],
            },
            {
                "apiGroups": ["authentication.k8s.io"],
                "resources": ["selfsubjectreviews"],
                "verbs": ["create"],
            },
        ],
        [AUTHENTICATED],
    ),
    (
        "system:public-info-viewer",
        [{"nonResourceURLs": _PUBLIC_URLS, "verbs": ["get"]}],
        [AUTHENTICATED, UNAUTHENTICATED],
    ),
)
"""(ClusterRole, its rules, the groups its ClusterRoleBinding names): kube's bootstrap policy,
reduced to what this emulator serves."""


def service_account_user(namespace: str, name: str) -> User:
    return User(
        f"{rbac.SA_PREFIX}{namespace}:{name}",
        ("system:serviceaccounts", f"system:serviceaccounts:{namespace}", AUTHENTICATED),
    )


class Access:
    def __init__(
        self, ops: Operations, *, token: str | None, mode: str, public: frozenset[str]
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"authorization mode {mode!r}: expected one of {', '.join(MODES)}")
        self.ops = ops
        self.token = token
        self.rbac = mode == RBAC
        self.public = public
        self.signer = Signer()

    def bootstrap(self) -> None:
        """Create the bootstrap ClusterRoles and ClusterRoleBindings that are missing."""
        if not self.rbac:
            return
        roles = self.ops.registry.by_key(rbac.CLUSTER_ROLES)
        bindings = self.ops.registry.by_key(rbac.CLUSTER_ROLE_BINDINGS)
        assert roles is not None
        assert bindings is not None
        ctx = Context(manager="kube-apiserver")
        meta: Obj = {
            "labels": {"kubernetes.io/bootstrapping": "rbac-defaults"},
            "annotations": {"rbac.authorization.kubernetes.io/autoupdate": "true"},
        }
        for name, rules, groups in BOOTSTRAP:
            body: Obj
            if self.ops.store.peek(roles.key, "", name) is None:
                body = {"metadata": {"name": name, **meta}, "rules": rules}
                self.ops.create(roles, "v1", "", body, ctx)
            if self.ops.store.peek(bindings.key, "", name) is None:
                subjects = [{"apiGroup": RBAC_GROUP, "kind": "Group", "name": g} for g in groups]
                ref = {"apiGroup": RBAC_GROUP, "kind": "ClusterRole", "name": name}
                body = {"metadata": {"name": name, **meta}, "roleRef": ref, "subjects": subjects}
                self.ops.create(bindings, "v1", "", body, ctx)

    # --- per request ---------------------------------------------------------------------------

    def admit(self, request: web.Request, *, now: int) -> Attributes:
        """The request's attributes, for a user who may make it; else 401 or 403."""
        if request.path in self.public:
            return request_info(ANONYMOUS, request.method, request.path, request.query)
        user = self.authenticate(request.headers.get("Authorization", ""), now=now)
        if self.rbac:
            user = self.impersonate(request, user)
        attrs = request_info(user, request.method, request.path, request.query)
        if self.rbac:
            allowed, reason = rbac.authorize(self.ops.store, attrs)
            if not allowed:
                raise forbidden(attrs, reason)
        return attrs

    def authenticate(self, header: str, *, now: int) -> User:
        scheme, _, token = header.partition(" ")
        if self.token is None and not self.rbac:
            return ADMIN
        if scheme.lower() != "bearer" or not token:
            raise errors.unauthorized()
        if token == self.token:
            return ADMIN
        claims = self.signer.verify(token, now=now) if self.rbac else None
        if claims is None:
            raise errors.unauthorized()
        sa = self.ops.store.peek(SERVICE_ACCOUNTS, claims.namespace, claims.name)
        if sa is None or sa["metadata"].get("uid") != claims.uid:
            raise errors.unauthorized()
        return service_account_user(claims.namespace, claims.name)

    def impersonate(self, request: web.Request, user: User) -> User:
        """The user the `Impersonate-*` headers ask for, if `user` may impersonate each of them
        (kube's impersonation filter: verb `impersonate` on `users`, `groups`, or the
        ServiceAccount)."""
        name = request.headers.get("Impersonate-User")
        groups = list(request.headers.getall("Impersonate-Group", []))
        if name is None:
            if groups:
                raise errors.internal(
                    f"requested {[f'groups={g}' for g in groups]} without impersonating a user"
                )
            return user
        checks = [Attributes(user, "impersonate", True, resource="users", name=name)]
        if name.startswith(rbac.SA_PREFIX) and name.count(":") == 3:
            _, _, ns, sa = name.split(":")
            checks = [
                Attributes(
                    user, "impersonate", True, namespace=ns, resource="serviceaccounts", name=sa
                )
            ]
            groups = groups or list(service_account_user(ns, sa).groups[:2])
        checks += [Attributes(user, "impersonate", True, resource="groups", name=g) for g in groups]
        for attrs in checks:
            allowed, reason = rbac.authorize(self.ops.store, attrs)
            if not allowed:
                raise forbidden(attrs, reason)
        if name != ANONYMOUS.name and not {AUTHENTICATED, UNAUTHENTICATED} & set(groups):
            groups.append(AUTHENTICATED)
        return User(name, tuple(groups))


def forbidden(attrs: Attributes, reason: str) -> errors.ApiError:
    """kube's 403 for a refused request (details name the resource, not the subresource)."""
    details: Obj = {}
    if attrs.name:
        details["name"] = attrs.name
    if attrs.api_group:
        details["group"] = attrs.api_group
    if attrs.resource:
        details["kind"] = attrs.resource
    return errors.ApiError(403, "Forbidden", rbac.forbidden_message(attrs, reason), details)
