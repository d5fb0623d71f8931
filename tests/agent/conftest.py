"""Fixtures of the agent's tests: an emulated cluster "east" with our CRDs, a real nats-server
(tests/conftest.py), the test issuer, bouncer and audit trail on the bus, and the agent."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import stamina
from agent.agent_testing import (
    AgentProcess,
    Audit,
    FakeBouncer,
    FakeIssuer,
    make_signing_ca,
    put_trust_bundle,
    running_consumers,
)
from cryptography.hazmat.primitives import serialization
from k8s.harness import crd_documents, eventually

from services.agent.settings import AgentSettings
from shared.bus import Bus, NatsSettings
from shared.events import EventType
from shared.k8s.client import KubeClient
from shared.k8s.config import KubeSettings
from shared.k8s.errors import KubeError
from shared.k8s.resources import (
    CUSTOM_RESOURCE_DEFINITIONS,
    ISSUED_CERTIFICATES,
    NAMESPACES,
)
from shared.pki import SigningCA
from shared.runtime.health import HealthSettings

if TYPE_CHECKING:
    from devstack.kubeapi import KubeAPI

_names = itertools.count()


@pytest.fixture(autouse=True)
def no_retry_waits() -> Any:
    """stamina retries (status conflicts) without sleeping."""
    with stamina.set_testing(True, attempts=100, cap=True):
        yield


@pytest.fixture
async def kubeapi() -> AsyncIterator[KubeAPI]:
    from devstack.kubeapi import KubeAPI

    async with KubeAPI(name="east", tls=False, token=None, bookmark_interval=0.5) as api:
        yield api


@pytest.fixture
def kubeconfig(kubeapi: KubeAPI, tmp_path: Path) -> Path:
    return kubeapi.write_kubeconfig(tmp_path / "east.kubeconfig")


@pytest.fixture
async def kube(kubeapi: KubeAPI) -> AsyncIterator[KubeClient]:
    async with KubeClient.from_kubeconfig_dict(kubeapi.kubeconfig_dict()) as client:
        for doc in crd_documents():
            await client.create(CUSTOM_RESOURCE_DEFINITIONS, doc)

        async def served() -> bool:
            try:
                await client.list(ISSUED_CERTIFICATES, namespace="default", limit=1)
            except KubeError:
                return False
            return True

        await eventually(served, message="the CRDs to be served")
        yield client


@pytest.fixture
async def namespace(kube: KubeClient) -> str:
    name = f"mesh-{next(_names)}"
    await kube.create(
        NAMESPACES, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
    )
    return name


@pytest.fixture
async def trust_bundle(kube: KubeClient, signing_ca: SigningCA) -> str:
    """The cluster's trust bundle, pinning the test issuer's root; its PEM."""
    roots = signing_ca.root.public_bytes(serialization.Encoding.PEM).decode()
    await put_trust_bundle(kube, roots)
    return roots


@pytest.fixture
def make_settings(
    nats_settings: NatsSettings, kubeconfig: Path, trust_bundle: str
) -> Callable[..., AgentSettings]:
    def make(**overrides: Any) -> AgentSettings:
        options: dict[str, Any] = {
            "cluster": "east",
            "instance": "east-test",
            "resend_after": 30.0,
            "failure_backoff_initial": 0.3,
            "failure_backoff_max": 1.0,
            "fetch_timeout": 0.2,
            "grace": 2.0,
            "nats": nats_settings,
            "kube": KubeSettings(kubeconfig=kubeconfig, request_timeout=10.0),
            "health": HealthSettings(host="127.0.0.1", port=0),
        }
        options.update(overrides)
        return AgentSettings(**options)

    return make


@pytest.fixture(scope="session")
def signing_ca() -> SigningCA:
    return make_signing_ca()


@pytest.fixture
def issuer(bus: Bus, kube: KubeClient, signing_ca: SigningCA) -> FakeIssuer:
    return FakeIssuer(bus=bus, kube=kube, ca=signing_ca)


@pytest.fixture
def bouncer(bus: Bus) -> FakeBouncer:
    return FakeBouncer(bus=bus)


@pytest.fixture
def audit() -> Audit:
    return Audit()


@pytest.fixture
async def others(
    bus: Bus, issuer: FakeIssuer, bouncer: FakeBouncer, audit: Audit
) -> AsyncIterator[None]:
    """The issuer, the bouncer and the status mirror, running on the bus."""
    async with running_consumers(
        bus,
        ("test-issuer", EventType.CSR_REQUESTED, issuer),
        ("test-bouncer", EventType.BOUNCE_REQUESTED, bouncer),
        ("test-audit", EventType.STATUS_CHANGED, audit),
    ):
        yield


@pytest.fixture
async def agent(
    others: None, make_settings: Callable[..., AgentSettings]
) -> AsyncIterator[AgentProcess]:
    """The agent, started; stopped (gracefully) at teardown."""
    process = AgentProcess(make_settings())
    await process.start()
    try:
        yield process
    finally:
        await process.stop()
