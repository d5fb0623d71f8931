"""Least privilege, proved: each service's ServiceAccount, bound by exactly the RBAC in deploy/
(applied from deploy/ itself), asks an RBAC-enforcing API server (`KubeAPI(authorization="RBAC")`)
through `shared.k8s.client.KubeClient`, with a token issued by the TokenRequest API as the
kubelet would mount it. Each row says what the service may do, or is refused with kube's 403.

The rows marked "(today)" are what the manifests still allow beyond a service's need, because
RBAC cannot narrow a label-selected list or an unselected informer by name (docs/deploy.md,
"RBAC: what each rule is for"): they are asserted so that narrowing them later shows up here as
a change of the table, not silently.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from k8s.harness import crd_documents
from security.rbac_support import DEPLOY, apply, kubeconfig_of

from devstack.kubeapi import KubeAPI
from services.issuer.rotating import CERTIFICATE_ROTATIONS
from shared.k8s.client import KubeClient
from shared.k8s.errors import Forbidden, NotFound
from shared.k8s.resources import (
    CONFIG_MAPS,
    CUSTOM_RESOURCE_DEFINITIONS,
    DEPLOYMENTS,
    ISSUED_CERTIFICATES,
    NAMESPACES,
    PODS,
    SECRETS,
    Resource,
)

MANIFESTS = (
    DEPLOY / "management" / "00-namespace.yaml",
    DEPLOY / "management" / "issuer-rbac.yaml",
    DEPLOY / "remote" / "agent-rbac.yaml",
    DEPLOY / "remote" / "bouncer-rbac.yaml",
)
# (namespace, resource, name) of what the clusters hold besides the manifests: the signing CA,
# a cluster registration's own CA (e), Istio's cacerts and an unrelated Secret (u), the agent's
# trust bundle and another ConfigMap (o).
BUNDLE = "meshtrust-trust-bundle"
SEEDED = (
    ("meshtrust-system", SECRETS, "root-ca"),
    ("east", SECRETS, "e"),
    ("istio-system", SECRETS, "cacerts"),
    ("istio-system", SECRETS, "u"),
    ("meshtrust-system", CONFIG_MAPS, BUNDLE),
    ("meshtrust-system", CONFIG_MAPS, "o"),
)
Call = Callable[[KubeClient], Awaitable[Any]]


def _body(resource: Resource, namespace: str, name: str) -> dict[str, Any]:
    return {
        "apiVersion": resource.api_version,
        "kind": resource.kind,
        "metadata": {"name": name, "namespace": namespace},
    }


async def _apply_deploy(admin: KubeClient) -> None:
    for namespace in ("east", "istio-system", "istio-ingress"):
        await admin.create(NAMESPACES, _body(NAMESPACES, "", namespace))
    for doc in crd_documents():
        await admin.create(CUSTOM_RESOURCE_DEFINITIONS, doc)
    await apply(admin, MANIFESTS)
    for namespace, resource, name in SEEDED:
        await admin.create(resource, _body(resource, namespace, name))


@pytest.fixture
async def cluster() -> AsyncIterator[KubeAPI]:
    async with KubeAPI(name="rbac", authorization="RBAC") as api:
        async with KubeClient.from_kubeconfig_dict(api.kubeconfig_dict()) as admin:
            await _apply_deploy(admin)
        yield api


def get(resource: Resource, namespace: str, name: str) -> Call:
    return lambda c: c.get(resource, name, namespace=namespace)


def list_(resource: Resource, namespace: str | None) -> Call:
    return lambda c: c.list(resource, namespace=namespace)


def by_name(resource: Resource, namespace: str, name: str) -> Call:
    """A list (a watch's first step) field-selected to one object, as the bouncer's informers."""
    return lambda c: c.list(resource, namespace=namespace, field_selector=f"metadata.name={name}")


def patch(resource: Resource, namespace: str, name: str) -> Call:
    return lambda c: c.patch_merge(resource, name, {"metadata": {}}, namespace=namespace)


def create(resource: Resource, namespace: str, name: str) -> Call:
    return lambda c: c.create(resource, _body(resource, namespace, name))


def delete(resource: Resource, namespace: str, name: str) -> Call:
    return lambda c: c.delete(resource, name, namespace=namespace)


ALLOWED, REFUSED = True, False
KEY = "istio-cacerts-meshtrust-key"  # the agent's key Secret of deploy/examples' declaration
SYS, ISTIO, ICS = "meshtrust-system", "istio-system", ISSUED_CERTIFICATES
ROTATIONS = CERTIFICATE_ROTATIONS
TABLE: list[tuple[str, str, Call, bool]] = [
    ("the issuer reads the signing CA", "issuer", get(SECRETS, SYS, "root-ca"), ALLOWED),
    (
        "the issuer cannot read a registration's Secret",
        "issuer",
        get(SECRETS, "east", "e"),
        REFUSED,
    ),
    ("the issuer cannot read Istio's cacerts", "issuer", get(SECRETS, ISTIO, "cacerts"), REFUSED),
    ("the issuer lists declarations everywhere", "issuer", list_(ICS, None), ALLOWED),
    ("the issuer cannot delete a declaration", "issuer", delete(ICS, "east", "x"), REFUSED),
    ("the issuer cannot write a Secret", "issuer", create(SECRETS, SYS, "x"), REFUSED),
    (
        "the issuer cannot write a Secret in a registration's namespace",
        "issuer",
        create(SECRETS, "east", "x"),
        REFUSED,
    ),
    ("the issuer cannot list Secrets everywhere", "issuer", list_(SECRETS, None), REFUSED),
    ("the agent reads cacerts", "agent", get(SECRETS, ISTIO, "cacerts"), ALLOWED),
    ("the agent writes a key Secret", "agent", create(SECRETS, ISTIO, "x-meshtrust-key"), ALLOWED),
    ("the agent cannot read the signing CA", "agent", get(SECRETS, SYS, "root-ca"), REFUSED),
    ("the agent cannot read Secrets elsewhere", "agent", list_(SECRETS, "east"), REFUSED),
    ("the agent reads its trust bundle", "agent", get(CONFIG_MAPS, SYS, BUNDLE), ALLOWED),
    ("the agent cannot read the bundle's neighbour", "agent", get(CONFIG_MAPS, SYS, "o"), REFUSED),
    ("the agent cannot list ConfigMaps", "agent", list_(CONFIG_MAPS, SYS), REFUSED),
    ("the agent cannot delete pods", "agent", delete(PODS, ISTIO, "x"), REFUSED),
    ("the agent cannot read another Secret", "agent", get(SECRETS, ISTIO, "u"), REFUSED),
    ("the agent cannot delete another Secret", "agent", delete(SECRETS, ISTIO, "u"), REFUSED),
    ("the agent cannot patch another Secret", "agent", patch(SECRETS, ISTIO, "u"), REFUSED),
    ("the agent deletes its key Secret", "agent", delete(SECRETS, ISTIO, KEY), ALLOWED),
    ("the agent lists istio-system's Secrets (today)", "agent", list_(SECRETS, ISTIO), ALLOWED),
    ("the bouncer cannot get cacerts", "bouncer", get(SECRETS, ISTIO, "cacerts"), REFUSED),
    ("the bouncer cannot watch cacerts", "bouncer", by_name(SECRETS, ISTIO, "cacerts"), REFUSED),
    ("the bouncer cannot read meshtrust-system's Secrets", "bouncer", list_(SECRETS, SYS), REFUSED),
    ("the bouncer cannot list istio-system's Secrets", "bouncer", list_(SECRETS, ISTIO), REFUSED),
    ("the bouncer restarts istiod", "bouncer", patch(DEPLOYMENTS, ISTIO, "istiod"), ALLOWED),
    (
        "the bouncer cannot patch another Deployment",
        "bouncer",
        patch(DEPLOYMENTS, ISTIO, "other"),
        REFUSED,
    ),
    (
        "the bouncer watches Deployments (today)",
        "bouncer",
        list_(DEPLOYMENTS, ISTIO),
        ALLOWED,
    ),
    (
        "the bouncer deletes pods where it bounces",
        "bouncer",
        delete(PODS, "istio-ingress", "x"),
        ALLOWED,
    ),
    (
        "the bouncer cannot delete pods elsewhere",
        "bouncer",
        delete(PODS, "kube-system", "x"),
        REFUSED,
    ),
    ("the bouncer cannot create a declaration", "bouncer", create(ICS, ISTIO, "x"), REFUSED),
    # Root rotation (docs/rotation.md): only operators start, approve or abort one.
    ("the issuer watches the rotations", "issuer", list_(ROTATIONS, SYS), ALLOWED),
    ("the issuer cannot start a rotation", "issuer", create(ROTATIONS, SYS, "x"), REFUSED),
    ("the issuer cannot approve or abort one", "issuer", patch(ROTATIONS, SYS, "x"), REFUSED),
    ("the issuer cannot delete one", "issuer", delete(ROTATIONS, SYS, "x"), REFUSED),
    ("the agent cannot see the rotations", "agent", list_(ROTATIONS, SYS), REFUSED),
    ("the agent cannot start a rotation", "agent", create(ROTATIONS, SYS, "x"), REFUSED),
    ("the bouncer cannot start a rotation", "bouncer", create(ROTATIONS, SYS, "x"), REFUSED),
]


@pytest.mark.parametrize(
    ("service", "call", "allowed"), [r[1:] for r in TABLE], ids=[r[0] for r in TABLE]
)
async def test_each_service_within_its_rules(
    cluster: KubeAPI, service: str, call: Call, allowed: bool
) -> None:
    async with KubeClient.from_kubeconfig_dict(await kubeconfig_of(cluster, service)) as client:
        if allowed:
            # allowed, and maybe nothing there: the API says NotFound only after authorising
            with contextlib.suppress(NotFound):
                await call(client)
        else:
            with pytest.raises(Forbidden) as refused:
                await call(client)
            assert (
                f'User "system:serviceaccount:meshtrust-system:meshtrust-{service}" cannot'
                in str(refused.value)
            )
