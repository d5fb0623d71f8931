"""Fixtures for the Kubernetes tests: an emulated API server, clients, CRDs, namespaces."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

import pytest
import stamina

from k8s.harness import crd_documents, eventually
from shared.k8s.client import KubeClient
from shared.k8s.errors import KubeError
from shared.k8s.resources import (
    CUSTOM_RESOURCE_DEFINITIONS,
    ISSUED_CERTIFICATES,
    NAMESPACES,
    POD_BOUNCE_DIRECTIVES,
)

if TYPE_CHECKING:
    from devstack.kubeapi import KubeAPI

_names = itertools.count()


@pytest.fixture
async def kubeapi() -> AsyncIterator[KubeAPI]:
    """A fresh emulated kube-apiserver (plain HTTP, no auth) for one test."""
    from devstack.kubeapi import KubeAPI  # imported late: the pure tests run without it

    async with KubeAPI(name="east", tls=False, token=None, pod_ready_delay=0.05) as api:
        yield api


@pytest.fixture
async def kube(kubeapi: KubeAPI) -> AsyncIterator[KubeClient]:
    """A client of the emulator, built from its kubeconfig."""
    async with KubeClient.from_kubeconfig_dict(kubeapi.kubeconfig_dict()) as client:
        yield client


@pytest.fixture
def no_retry_waits() -> Any:
    """stamina retries without sleeping (attempt caps stay as the code sets them)."""
    with stamina.set_testing(True, attempts=100, cap=True):
        yield


async def install_crds(client: KubeClient) -> None:
    """Create our CRDs and wait until both resources are served."""
    for doc in crd_documents():
        await client.create(CUSTOM_RESOURCE_DEFINITIONS, doc)

    async def served() -> bool:
        try:
            await client.list(ISSUED_CERTIFICATES, namespace="default", limit=1)
            await client.list(POD_BOUNCE_DIRECTIVES, namespace="default", limit=1)
        except KubeError:
            return False
        return True

    await eventually(served, message="the CRDs to be served")


@pytest.fixture
async def crds(kube: KubeClient) -> None:
    """Our CRDs installed in the emulator."""
    await install_crds(kube)


@pytest.fixture
def make_namespace(kube: KubeClient) -> Callable[[], Awaitable[str]]:
    """Create a fresh namespace and return its name."""

    async def make() -> str:
        name = f"ns-{next(_names)}"
        await kube.create(
            NAMESPACES, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
        )
        return name

    return make


@pytest.fixture
async def namespace(make_namespace: Callable[[], Awaitable[str]]) -> str:
    """One fresh namespace."""
    return await make_namespace()
