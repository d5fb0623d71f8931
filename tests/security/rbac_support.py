"""Helpers of the RBAC tests: apply manifests from deploy/ as the admin, and a kubeconfig whose
user is a service's ServiceAccount, with a token from the TokenRequest API."""

from __future__ import annotations

import ssl
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from devstack.kubeapi import KubeAPI
from shared.k8s.client import KubeClient
from shared.k8s.resources import NAMESPACES, Resource

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
RBAC = "rbac.authorization.k8s.io"
KINDS = {
    "Namespace": NAMESPACES,
    "ServiceAccount": Resource("", "v1", "serviceaccounts", "ServiceAccount"),
    "Role": Resource(RBAC, "v1", "roles", "Role"),
    "RoleBinding": Resource(RBAC, "v1", "rolebindings", "RoleBinding"),
    "ClusterRole": Resource(RBAC, "v1", "clusterroles", "ClusterRole", namespaced=False),
    "ClusterRoleBinding": Resource(
        RBAC, "v1", "clusterrolebindings", "ClusterRoleBinding", namespaced=False
    ),
}


async def apply(admin: KubeClient, paths: Iterable[Path]) -> None:
    """Create every document of the manifests (Namespaces, ServiceAccounts, RBAC) as they are."""
    for path in paths:
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                await admin.create(KINDS[doc["kind"]], doc)


async def token(api: KubeAPI, service: str) -> str:
    """A token of `meshtrust-<service>` in meshtrust-system, as the kubelet would mount."""
    path = f"/api/v1/namespaces/meshtrust-system/serviceaccounts/meshtrust-{service}/token"
    headers = {"Authorization": f"Bearer {api.token}"}
    tls = None if api.ca_pem is None else ssl.create_default_context(cadata=api.ca_pem.decode())
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{api.url}{path}", json={"spec": {}}, headers=headers, ssl=tls) as resp,
    ):
        assert resp.status == 201, await resp.text()
        return str((await resp.json())["status"]["token"])


async def kubeconfig_of(api: KubeAPI, service: str) -> dict[str, Any]:
    """The cluster's kubeconfig, with the service's token instead of the admin's."""
    config = api.kubeconfig_dict()
    config["users"][0]["user"]["token"] = await token(api, service)
    return config
