"""The RBAC of deploy/ grants each service exactly what its code requests, where it requests it.

**Where the needs come from.** `deploy_usage.py` reads `services/<service>/*.py` (ast) and
collects every Kubernetes request: `KubeClient` calls, the `shared.k8s` helpers (informers,
status writes, the Event recorder) and the service's own wrappers around them, with the
resource resolved to `shared.k8s.resources` objects. This is robust in the way that matters:
whatever it cannot resolve fails the test (`unresolved`), so a new call site cannot be missed
silently; and the table of `KubeClient` methods it relies on is checked here against the HTTP
method each method sends. `EXPECTED` is a floor written from docs/bouncer.md and the brief: it
catches the analysis itself going blind (finding nothing would otherwise pass "no extra
rules").

**Where they apply.** The namespaces each service acts in follow from its settings in the
Deployment (agent: `MESHTRUST_AGENT_NAMESPACES`; issuer: cluster-wide, Secrets only in
`MESHTRUST_ISSUER_SIGNING_NAMESPACES`) and from the example declarations (the bouncer acts where
the directive's selectors point). Grants are computed from the manifests as Kubernetes does:
ClusterRoleBinding = everywhere, RoleBinding = its namespace, each to the ServiceAccount of the
Deployment.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from deploy_usage import KUBE_METHODS, Need, Usage, usage_of
from deploykit import REPO, Document, all_documents, containers, documents, our_deployments

EVERYWHERE = "*"
SERVICES = ("issuer", "agent", "bouncer")

EXPECTED: dict[str, set[str]] = {
    "issuer": {
        "watch certificates.smh.solo.io/issuedcertificates",
        "watch certificates.smh.solo.io/podbouncedirectives",
        "update certificates.smh.solo.io/issuedcertificates/status",
        "get core/secrets",
        "create core/events",
    },
    "agent": {
        "create certificates.smh.solo.io/issuedcertificates",
        "delete certificates.smh.solo.io/podbouncedirectives",
        "update certificates.smh.solo.io/issuedcertificates/status",
        "create core/secrets",
        "delete core/secrets",
        "create core/events",
    },
    "bouncer": {
        "list core/pods",
        "delete core/pods",
        "watch core/configmaps",
        "watch core/secrets",
        "patch apps/deployments",
        "get apps/replicasets",
        "get certificates.smh.solo.io/issuedcertificates",
        "update certificates.smh.solo.io/podbouncedirectives/status",
    },
}

_USAGE: dict[str, Usage] = {}


def usage(service: str) -> Usage:
    if service not in _USAGE:
        _USAGE[service] = usage_of(service)
    return _USAGE[service]


# --- what the manifests grant ------------------------------------------------------------------


@dataclass(frozen=True)
class Grant:
    need: Need
    namespace: str  # EVERYWHERE for a ClusterRoleBinding
    name: str | None = None  # one of the rule's resourceNames; None: any object


def _rules(docs: list[Document], kind: str, name: str, namespace: str | None) -> list[dict]:
    for doc in docs:
        if (
            doc.kind == kind
            and doc.name == name
            and (kind == "ClusterRole" or doc.namespace == namespace)
        ):
            return list(doc.body.get("rules") or [])
    raise AssertionError(f"{kind} {name} is bound but not defined")


def grants(folder: str, service_account: str, docs: list[Document] | None = None) -> set[Grant]:
    """What the (Cluster)RoleBindings of `folder` give the ServiceAccount, and where."""
    if docs is None:
        docs = [d for d in all_documents() if d.path.parent.name == folder]
    out: set[Grant] = set()
    for binding in docs:
        if binding.kind not in ("ClusterRoleBinding", "RoleBinding"):
            continue
        subjects = binding.body.get("subjects") or []
        if not any(
            s["kind"] == "ServiceAccount"
            and s["name"] == service_account
            and s["namespace"] == "meshtrust-system"
            for s in subjects
        ):
            continue
        ref = binding.body["roleRef"]
        where = EVERYWHERE if binding.kind == "ClusterRoleBinding" else str(binding.namespace)
        for rule in _rules(docs, ref["kind"], ref["name"], binding.namespace):
            names: list[str | None] = list(rule.get("resourceNames") or [None])
            for group in rule["apiGroups"]:
                for resource in rule["resources"]:
                    for verb in rule["verbs"]:
                        assert "*" not in (group, resource, verb), f"wildcard in {ref['name']}"
                        for name in names:
                            out.add(Grant(Need(group, resource, verb), where, name))
    return out


def _deployment(service: str) -> Document:
    (doc,) = [d for d in our_deployments() if d.name == f"meshtrust-{service}"]
    return doc


def _env(service: str) -> dict[str, str]:
    (container,) = containers(_deployment(service))
    return {e["name"]: e["value"] for e in container.get("env") or [] if "value" in e}


def _bounced_namespaces() -> set[str]:
    """Where the example directives send the bouncer: their selectors and rootCertSync refs,
    plus the namespace the agent applies the directive and the IssuedCertificate in."""
    docs = documents(REPO / "deploy" / "examples" / "declarations.yaml", cluster="east")
    out: set[str] = set()
    for doc in docs:
        spec = doc.body.get("spec") or {}
        if doc.kind == "IssuedCertificate":
            out.add(spec["issuedCertificateSecret"]["namespace"])
            out.add(spec["podBounceDirective"]["namespace"])
        if doc.kind == "PodBounceDirective":
            for selector in spec["podsToBounce"]:
                out.add(selector["namespace"])
                sync = selector.get("rootCertSync") or {}
                for ref in ("secretRef", "configMapRef"):
                    if ref in sync:
                        out.add(sync[ref]["namespace"])
    return out


def _trust_bundle() -> tuple[str, str]:
    """The agent's trust bundle ConfigMap, as deployed (else the setting's default)."""
    from services.agent.settings import AgentSettings

    default = AgentSettings.model_fields["trust_bundle"].default
    namespace, _, name = _env("agent").get("MESHTRUST_AGENT_TRUST_BUNDLE", default).partition("/")
    return namespace, name


def _examples(kind: str) -> list[Document]:
    paths = ("declarations.yaml", "workloads.yaml")
    docs = [d for p in paths for d in documents(REPO / "deploy" / "examples" / p, cluster="east")]
    return [d for d in docs if d.kind == kind]


BY_NAME = {"get", "update", "patch", "delete"}  # the verbs whose request names its object


def named(service: str, item: Need) -> frozenset[str] | None:
    """The objects `service` requests `item` of, when they are known in advance: the one its
    code names, or those the example declarations and workloads name."""
    if service == "agent" and item.resource == "configmaps":
        return frozenset({_trust_bundle()[1]})
    if service == "agent" and item.resource == "secrets" and item.verb in BY_NAME:
        from services.agent.objects import key_secret_name

        ics = _examples("IssuedCertificate")
        issued = {d.body["spec"]["issuedCertificateSecret"]["name"] for d in ics}
        return frozenset(issued | {key_secret_name(str(d.name)) for d in ics})
    if service == "bouncer" and item.resource == "deployments" and item.verb in BY_NAME:
        return frozenset(str(d.name) for d in _examples("Deployment"))
    return None


def _root_cert_sync_namespaces() -> set[str]:
    """Where the example directives use rootCertSync (its role is bound only there)."""
    out: set[str] = set()
    for doc in _examples("PodBounceDirective"):
        for selector in doc.body["spec"]["podsToBounce"]:
            sync = selector.get("rootCertSync") or {}
            out |= {sync[ref]["namespace"] for ref in ("secretRef", "configMapRef") if ref in sync}
    return out


def scope(service: str, item: Need) -> set[str]:
    """The namespaces where `service` makes requests of `item`, as deployed."""
    if service == "agent" and item.resource == "configmaps":
        return {_trust_bundle()[0]}
    if service == "issuer":
        if item.resource == "secrets":
            scoped = _env("issuer")["MESHTRUST_ISSUER_SIGNING_NAMESPACES"]
            return {n.strip() for n in scoped.split(",") if n.strip()}
        if item.resource.split("/")[0] in ("clusterregistrations", "certificaterotations"):
            env = _env("issuer")
            return {env.get("MESHTRUST_ISSUER_REGISTRATION_NAMESPACE", "meshtrust-system")}
        return {EVERYWHERE}  # every namespace is a cluster registration
    if service == "agent":
        served = _env("agent").get("MESHTRUST_AGENT_NAMESPACES", "")
        return {n.strip() for n in served.split(",") if n.strip()} or {EVERYWHERE}
    if item.resource in ("secrets", "configmaps"):
        return _root_cert_sync_namespaces()
    return _bounced_namespaces()


def _covered(
    item: Need, namespace: str, granted: set[Grant], names: frozenset[str] | None = None
) -> bool:
    """Granted there (or everywhere), for any object or for every one named."""
    places = {EVERYWHERE, namespace}
    return any(Grant(item, place, None) in granted for place in places) or (
        names is not None
        and all(any(Grant(item, place, n) in granted for place in places) for n in names)
    )


FOLDER = {"issuer": "management", "agent": "remote", "bouncer": "remote"}


# --- the analysis is sound -------------------------------------------------------------------


@pytest.mark.parametrize("service", SERVICES)
def test_every_kubernetes_request_of_the_service_is_understood(service: str) -> None:
    found = usage(service)
    assert found.unresolved == [], "teach deploy_usage.py these calls:\n" + "\n".join(
        found.unresolved
    )
    assert found.requests > 0


@pytest.mark.parametrize("service", SERVICES)
def test_the_analysis_finds_what_the_docs_say_the_service_does(service: str) -> None:
    derived = {str(n) for n in usage(service).needs}
    assert EXPECTED[service] <= derived, sorted(EXPECTED[service] - derived)


FAKE_SERVICE = """
from shared.k8s import Informer
from shared.k8s.resources import CONFIG_MAPS, PODS, SECRETS, Resource

LEASES = Resource("coordination.k8s.io", "v1", "leases", "Lease")
KINDS = {"a": PODS, "b": CONFIG_MAPS}


async def _read(kube, resource, name):
    return await kube.get(resource, name, namespace="x")


class Store:
    def __init__(self, kube):
        self.kube = kube

    async def remove(self, resource, name):
        await self.kube.delete(resource, name, namespace="x")


async def run(kube, store: Store, kind):
    await _read(kube, SECRETS, "s")
    resource = KINDS[kind]
    await store.remove(resource, "p")
    Informer(kube, LEASES)
    await kube.patch_merge(SECRETS, "s", {})
    {}.get(SECRETS)  # unknown: reported, not guessed
"""


def test_the_analysis_follows_wrappers_mappings_and_local_resources(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = tmp_path / "fakepkg" / "svc"
    package.mkdir(parents=True)
    (package / "mod.py").write_text(FAKE_SERVICE)
    monkeypatch.syspath_prepend(str(tmp_path))
    found = usage_of("svc", root=package.parent, package="fakepkg")
    assert sorted(str(n) for n in found.needs) == [
        "delete core/configmaps",
        "delete core/pods",
        "get core/secrets",
        "list coordination.k8s.io/leases",
        "patch core/secrets",
        "watch coordination.k8s.io/leases",
    ]
    assert found.unresolved == [
        "fakepkg/svc/mod.py:27: a resource goes into {}.get(), which is neither a KubeClient "
        "request, a known helper nor a wrapper"
    ]


def test_the_kube_client_methods_send_the_http_methods_their_verbs_imply() -> None:
    http = {"get": "GET", "list": "GET", "watch": "GET", "create": "POST", "update": "PUT"}
    http |= {"patch": "PATCH", "delete": "DELETE"}
    tree = ast.parse((REPO / "shared" / "k8s" / "client.py").read_text())
    (client,) = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "KubeClient"]
    methods = {
        f.name: f for f in client.body if isinstance(f, ast.FunctionDef | ast.AsyncFunctionDef)
    }
    for name, (verb, subresource) in KUBE_METHODS.items():
        source = ast.unparse(methods[name])
        if name in ("get_model", "list_models", "create_model"):
            base = {
                "get_model": "self.get(",
                "list_models": "self.list(",
                "create_model": "self.create(",
            }
            assert base[name] in source, name
            continue
        if verb == "watch":
            assert "('watch', 'true')" in source, name
        assert f"'{http[verb]}'" in source, f"KubeClient.{name} should send {http[verb]}"
        assert ("subresource='status'" in source) == (subresource == "status"), name


# --- the manifests grant exactly that ----------------------------------------------------------


@pytest.mark.parametrize("service", SERVICES)
def test_rbac_covers_every_request_where_the_service_makes_it(service: str) -> None:
    account = _deployment(service).body["spec"]["template"]["spec"]["serviceAccountName"]
    granted = grants(FOLDER[service], account)
    missing = [
        f"{item} in {namespace} (used at {usage(service).needs[item][0]})"
        for item in sorted(usage(service).needs)
        for namespace in sorted(scope(service, item))
        if not _covered(item, namespace, granted, named(service, item))
    ]
    assert missing == []


@pytest.mark.parametrize("service", SERVICES)
def test_rbac_names_the_object_where_the_service_reads_only_one(service: str) -> None:
    account = _deployment(service).body["spec"]["template"]["spec"]["serviceAccountName"]
    for grant in grants(FOLDER[service], account):
        names = named(service, grant.need)
        if grant.name is not None or names is not None:
            assert grant.name in (names or ()), grant


def test_the_agent_may_read_its_trust_bundle_and_nothing_else_of_configmaps() -> None:
    granted = grants("remote", "meshtrust-agent")
    namespace, name = _trust_bundle()
    configmaps = {g for g in granted if g.need.resource == "configmaps"}
    assert configmaps == {Grant(Need("", "configmaps", "get"), namespace, name)}


@pytest.mark.parametrize("service", SERVICES)
def test_rbac_grants_nothing_the_service_does_not_use(service: str) -> None:
    account = _deployment(service).body["spec"]["template"]["spec"]["serviceAccountName"]
    needs = usage(service).needs
    unused = sorted(str(g.need) for g in grants(FOLDER[service], account) if g.need not in needs)
    assert unused == []


@pytest.mark.parametrize("service", SERVICES)
def test_rbac_reaches_no_namespace_the_service_does_not_act_in(service: str) -> None:
    account = _deployment(service).body["spec"]["template"]["spec"]["serviceAccountName"]
    for grant in grants(FOLDER[service], account):
        allowed = scope(service, grant.need)
        assert grant.namespace in allowed or EVERYWHERE in allowed, grant


def test_a_missing_rule_would_be_noticed() -> None:
    # Guards the coverage test: the bouncer's RBAC without pod delete no longer covers it.
    path = REPO / "deploy" / "remote" / "bouncer-rbac.yaml"
    docs = [Document(path, i, body) for i, body in enumerate(yaml.safe_load_all(path.read_text()))]
    role = next(d for d in docs if d.kind == "ClusterRole")
    pods = next(r for r in role.body["rules"] if "pods" in r["resources"])
    delete = Need("", "pods", "delete")
    assert delete in usage("bouncer").needs
    assert _covered(delete, "istio-system", grants("remote", "meshtrust-bouncer", docs))
    pods["verbs"].remove("delete")
    assert not _covered(delete, "istio-system", grants("remote", "meshtrust-bouncer", docs))


def test_each_deployment_runs_as_its_own_service_account() -> None:
    accounts = {
        d.name: d.body["spec"]["template"]["spec"]["serviceAccountName"] for d in our_deployments()
    }
    assert accounts == {f"meshtrust-{s}": f"meshtrust-{s}" for s in SERVICES}
    defined = {(d.path.parent.name, d.name) for d in all_documents() if d.kind == "ServiceAccount"}
    assert {(FOLDER[s], f"meshtrust-{s}") for s in SERVICES} <= defined
