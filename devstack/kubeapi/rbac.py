"""RBAC: Role, ClusterRole, RoleBinding and ClusterRoleBinding evaluated as kube-apiserver's RBAC
authorizer does (plugin/pkg/auth/authorizer/rbac), over the objects in the store.

A request is allowed when one rule of one role bound to the user (by name, by one of its groups,
or as its ServiceAccount) matches it: ClusterRoleBindings everywhere, RoleBindings in their
namespace (a RoleBinding may refer to a ClusterRole, granting its rules there).  A rule matches
on verb, API group, resource (`*`, `pods`, `pods/status`, `*/scale`; not `pods/*`), and, when it
has resourceNames, on the object's name: a request without a name (create, a list or watch
without a `metadata.name` field selector, deletecollection) never matches such a rule.
Non-resource requests match `nonResourceURLs` (exact, or a prefix ending in `*`).  There is no
deny, no aggregation (`aggregationRule` is ignored) and no escalation check on writes of RBAC
objects (kube refuses to let a user grant what it does not hold; here the admin writes them).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from shared.api.meta import Obj

from .requestinfo import Attributes, User
from .resources import RBAC_GROUP
from .store import Store

SA_PREFIX = "system:serviceaccount:"
CLUSTER_ROLES = f"{RBAC_GROUP}/clusterroles"
CLUSTER_ROLE_BINDINGS = f"{RBAC_GROUP}/clusterrolebindings"
ROLES = f"{RBAC_GROUP}/roles"
ROLE_BINDINGS = f"{RBAC_GROUP}/rolebindings"


@dataclass(frozen=True)
class Grant:
    """The rules one binding gives, and how SubjectAccessReview explains an allow."""

    binding: Obj
    subject: Obj
    rules: list[Obj]

    def explain(self) -> str:
        """As kube's binding describers: `RBAC: allowed by RoleBinding "b/ns" of ClusterRole
        "r" to ServiceAccount "sa/ns"`."""
        md, ref, s = self.binding["metadata"], self.binding.get("roleRef") or {}, self.subject
        ns = md.get("namespace", "")
        where = f'RoleBinding "{md["name"]}/{ns}"' if ns else f'ClusterRoleBinding "{md["name"]}"'
        who = s.get("name", "")
        if s.get("kind") == "ServiceAccount":
            who = f"{who}/{s.get('namespace') or ns}"
        role = f'{ref.get("kind")} "{ref.get("name")}"'
        return f'RBAC: allowed by {where} of {role} to {s.get("kind")} "{who}"'


def _subject_matches(subject: Obj, user: User, binding_ns: str) -> bool:
    kind, name = subject.get("kind"), subject.get("name")
    if kind == "User":
        return bool(name == user.name)
    if kind == "Group":
        return name in user.groups
    if kind == "ServiceAccount":
        ns = subject.get("namespace") or binding_ns
        return bool(user.name == f"{SA_PREFIX}{ns}:{name}")
    return False


def grants(store: Store, user: User, namespace: str, errors: list[str]) -> Iterator[Grant]:
    """The grants that apply to `user` in `namespace` ("" for cluster-scoped requests): every
    ClusterRoleBinding, then the RoleBindings of the namespace.  A binding whose role is missing
    grants nothing and is reported in `errors`, as kube's authorizer does."""
    bindings = store.objects_of(CLUSTER_ROLE_BINDINGS)
    if namespace:
        bindings = bindings + store.objects_of(ROLE_BINDINGS, namespace)
    for binding in bindings:
        binding_ns = binding["metadata"].get("namespace", "")
        subjects = binding.get("subjects") or []
        subject = next((s for s in subjects if _subject_matches(s, user, binding_ns)), None)
        if subject is None:
            continue
        ref = binding.get("roleRef") or {}
        if ref.get("kind") == "Role":
            role = store.peek(ROLES, binding_ns, ref.get("name", ""))
            missing = f'role.{RBAC_GROUP} "{ref.get("name")}" not found'
        else:
            role = store.peek(CLUSTER_ROLES, "", ref.get("name", ""))
            missing = f'clusterrole.{RBAC_GROUP} "{ref.get("name")}" not found'
        if role is None:
            errors.append(missing)
            continue
        yield Grant(binding, subject, list(role.get("rules") or []))


def _has(values: list[str] | None, wanted: str) -> bool:
    return bool(values) and ("*" in values or wanted in values)  # type: ignore[operator]


def _resource_matches(rule: Obj, a: Attributes) -> bool:
    resources: list[str] = rule.get("resources") or []
    combined = f"{a.resource}/{a.subresource}" if a.subresource else a.resource
    for r in resources:
        if r in ("*", combined):
            return True
        if a.subresource and r == f"*/{a.subresource}":
            return True
    return False


def rule_allows(rule: Obj, a: Attributes) -> bool:
    if not _has(rule.get("verbs"), a.verb):
        return False
    if not a.resource_request:
        return any(
            u == "*" or u == a.path or (u.endswith("*") and a.path.startswith(u[:-1]))
            for u in rule.get("nonResourceURLs") or []
        )
    if not _has(rule.get("apiGroups"), a.api_group) or not _resource_matches(rule, a):
        return False
    names: list[str] = rule.get("resourceNames") or []
    return not names or a.name in names


def authorize(store: Store, a: Attributes) -> tuple[bool, str]:
    """(allowed, reason): the reason explains an allow, or lists broken bindings on a deny."""
    errors: list[str] = []
    for grant in grants(store, a.user, a.namespace, errors):
        if any(rule_allows(rule, a) for rule in grant.rules):
            return True, grant.explain()
    if not errors:
        return False, ""
    return False, f"RBAC: {errors[0]}" if len(errors) == 1 else f"RBAC: [{', '.join(errors)}]"


def forbidden_message(a: Attributes, reason: str = "") -> str:
    """kube's `responsewriters.Forbidden` message (with NewForbidden's prefix)."""
    who = a.user.name
    if not a.resource_request:
        msg = f'forbidden: User "{who}" cannot {a.verb} path "{a.path}"'
    else:
        resource = f"{a.resource}/{a.subresource}" if a.subresource else a.resource
        qualified = f"{a.resource}.{a.api_group}" if a.api_group else a.resource
        head = f'{qualified} "{a.name}" is forbidden' if a.name else f"{qualified} is forbidden"
        scope = f'in the namespace "{a.namespace}"' if a.namespace else "at the cluster scope"
        msg = (
            f'{head}: User "{who}" cannot {a.verb} resource "{resource}" in API group '
            f'"{a.api_group}" {scope}'
        )
    return f"{msg}: {reason}" if reason else msg
