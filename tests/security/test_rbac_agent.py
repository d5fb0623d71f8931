"""The agent, run in-process through its real composition (`AgentProcess`, `app.serve`) with a
kubeconfig holding its ServiceAccount's token, bound by exactly deploy/remote/agent-rbac.yaml,
against the RBAC-enforcing emulator: an IssuedCertificate in istio-system (the namespace the
manifests bind it in, `MESHTRUST_AGENT_NAMESPACES`) goes to FINISHED with its Secret written.

The issuer's side of the bus, the trust bundle and the agent process are tests/agent's own
fixtures and helpers; only the cluster, the namespace and the agent's kubeconfig differ.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from agent.agent_testing import AgentProcess, get_secret, ic_body, state_of

# tests/agent's fixtures: a module's fixtures are the names it holds
from agent.conftest import (  # noqa: F401
    audit,
    bouncer,
    issuer,
    kube,
    make_settings,
    no_retry_waits,
    others,
    signing_ca,
    trust_bundle,
)
from k8s.harness import eventually
from security.rbac_support import DEPLOY, apply, kubeconfig_of

from devstack.kubeapi import KubeAPI
from devstack.kubeapi.kubeconfig import write
from services.agent.objects import key_secret_name
from services.agent.settings import AgentSettings
from shared.k8s.client import KubeClient
from shared.k8s.resources import ISSUED_CERTIFICATES, NAMESPACES

pytestmark = pytest.mark.slow
SERVED = "istio-system"
IC = "istio-cacerts"


@pytest.fixture
async def kubeapi() -> AsyncIterator[KubeAPI]:
    async with KubeAPI(name="east", authorization="RBAC", bookmark_interval=0.5) as api:
        yield api


@pytest.fixture
async def namespace(kube: KubeClient) -> str:  # noqa: F811
    await kube.create(
        NAMESPACES, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": SERVED}}
    )
    return SERVED


@pytest.fixture
async def kubeconfig(
    kubeapi: KubeAPI,
    kube: KubeClient,  # noqa: F811
    namespace: str,
    trust_bundle: str,  # noqa: F811
    tmp_path: Path,
) -> Path:
    """The agent's own: its ServiceAccount and RBAC applied from deploy/ (the trust bundle's
    namespace, meshtrust-system, exists by then), and a token of it."""
    await apply(kube, [DEPLOY / "remote" / "agent-rbac.yaml"])
    return write(tmp_path / "agent.kubeconfig", await kubeconfig_of(kubeapi, "agent"))


@pytest.fixture
async def agent(
    others: None,  # noqa: F811
    make_settings: Callable[..., AgentSettings],  # noqa: F811
) -> AsyncIterator[AgentProcess]:
    process = AgentProcess(make_settings(namespaces=(SERVED,)))
    await process.start()
    try:
        yield process
    finally:
        await process.stop()


async def test_the_agent_issues_within_its_deploy_rbac(
    kube: KubeClient,  # noqa: F811
    namespace: str,
    agent: AgentProcess,
) -> None:
    # The names of deploy/examples/declarations.yaml: the only Secrets the RBAC lets it write.
    await kube.create(ISSUED_CERTIFICATES, ic_body(IC, namespace, secret="cacerts"))

    async def finished() -> bool:
        return await state_of(kube, namespace, IC) == "FINISHED"

    await eventually(finished, within=20, message="FINISHED under the agent's RBAC")
    assert await get_secret(kube, namespace, "cacerts") is not None
    assert await get_secret(kube, namespace, key_secret_name(IC)) is None
