"""The bouncer, run in-process through its real composition (`services.bouncer.app.serve`) under
its ServiceAccount's token, bound by exactly deploy/remote/bouncer-rbac.yaml, against the
RBAC-enforcing emulator: its normal flow works within the rules, and a directive that points
outside them is answered with the API's 403, not retried forever.

The mesh, the agent's side of the bus and the running bouncer are tests/bouncer's own fixtures;
only the cluster differs (`authorization="RBAC"`), and the bouncer's kubeconfig.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

# tests/bouncer's fixtures: a module's fixtures are the names it holds
from bouncer.conftest import (  # noqa: F401
    GATEWAYS,
    ISTIO,
    Agent,
    Mesh,
    _no_retry_waits,
    agent,
    kube,
    make_settings,
    mesh,
    running_bouncer,
    selector,
)
from security.rbac_support import DEPLOY, apply, kubeconfig_of

from devstack.kubeapi import KubeAPI
from devstack.kubeapi.kubeconfig import write
from shared.bus import NatsSettings
from shared.events import new_issuance_id
from shared.k8s.resources import NAMESPACES

pytestmark = pytest.mark.slow
BOUNCER = "system:serviceaccount:meshtrust-system:meshtrust-bouncer"


@pytest.fixture
async def cluster() -> AsyncIterator[KubeAPI]:
    async with KubeAPI(
        name="east", authorization="RBAC", pod_ready_delay=0.05, pod_termination_delay=0.5
    ) as api:
        yield api


async def _install(mesh: Mesh, tmp_path: Path) -> Path:  # noqa: F811
    """The mesh and the bouncer's RBAC from deploy/; the bouncer's kubeconfig."""
    await mesh.install(istiod=1, gateways=1)
    await mesh.kube.create(
        NAMESPACES, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "istio-ingress"}}
    )
    await apply(
        mesh.kube,
        [DEPLOY / "remote" / "00-namespace.yaml", DEPLOY / "remote" / "bouncer-rbac.yaml"],
    )
    return write(tmp_path / "bouncer.kubeconfig", await kubeconfig_of(mesh.api, "bouncer"))


async def test_the_bouncer_bounces_within_its_deploy_rbac(
    mesh: Mesh,  # noqa: F811
    agent: Agent,  # noqa: F811
    nats_settings: NatsSettings,
    tmp_path: Path,
) -> None:
    settings = make_settings(nats_settings, await _install(mesh, tmp_path))
    await mesh.directive(selector(ISTIO, "istiod", 1))
    issuance = new_issuance_id()
    await mesh.certificate(issuance)
    before = await mesh.names(ISTIO, "istiod")

    async with running_bouncer(settings):
        await agent.ask(issuance)
        answer = await agent.answer(issuance)

    assert answer.data.error is None
    assert [set(s.pods) for s in answer.data.selectors] == [before]
    assert (await mesh.status())["issuanceId"] == issuance


async def test_a_directive_outside_the_rbac_is_answered_with_the_403(
    mesh: Mesh,  # noqa: F811
    agent: Agent,  # noqa: F811
    nats_settings: NatsSettings,
    tmp_path: Path,
) -> None:
    settings = make_settings(nats_settings, await _install(mesh, tmp_path))
    await mesh.directive(selector(GATEWAYS, "gateway", 1))  # no RoleBinding in `gateways`
    issuance = new_issuance_id()
    await mesh.certificate(issuance)
    before = await mesh.names(GATEWAYS, "gateway")

    async with running_bouncer(settings):
        await agent.ask(issuance)
        answer = await agent.answer(issuance)

    assert answer.data.error is not None
    assert f'User "{BOUNCER}" cannot list resource "pods"' in answer.data.error
    assert await mesh.names(GATEWAYS, "gateway") == before
