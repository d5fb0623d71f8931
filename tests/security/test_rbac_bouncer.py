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
from services.bouncer.settings import BouncerSettings
from shared.bus import NatsSettings
from shared.events import BounceCompleted, new_issuance_id
from shared.k8s.resources import NAMESPACES

pytestmark = pytest.mark.slow
BOUNCER = "system:serviceaccount:meshtrust-system:meshtrust-bouncer"


@pytest.fixture
async def cluster() -> AsyncIterator[KubeAPI]:
    async with KubeAPI(
        name="east", authorization="RBAC", pod_ready_delay=0.05, pod_termination_delay=0.5
    ) as api:
        yield api


@pytest.fixture
async def settings(
    mesh: Mesh,  # noqa: F811
    nats_settings: NatsSettings,
    tmp_path: Path,
) -> BouncerSettings:
    """The mesh and the bouncer's RBAC from deploy/; the bouncer's settings, with a kubeconfig
    of its ServiceAccount."""
    await mesh.install(istiod=1, gateways=1)
    await mesh.kube.create(
        NAMESPACES, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "istio-ingress"}}
    )
    await apply(
        mesh.kube,
        [DEPLOY / "remote" / "00-namespace.yaml", DEPLOY / "remote" / "bouncer-rbac.yaml"],
    )
    kubeconfig = write(tmp_path / "bouncer.kubeconfig", await kubeconfig_of(mesh.api, "bouncer"))
    return make_settings(nats_settings, kubeconfig)


async def _bounce(
    mesh: Mesh,  # noqa: F811
    agent: Agent,  # noqa: F811
    settings: BouncerSettings,
    namespace: str,
    app: str,
) -> tuple[set[str], BounceCompleted]:
    """A directive bouncing `app` in `namespace`, asked for once: the pods before, the answer."""
    await mesh.directive(selector(namespace, app, 1))
    issuance = new_issuance_id()
    await mesh.certificate(issuance)
    before = await mesh.names(namespace, app)
    async with running_bouncer(settings):
        await agent.ask(issuance)
        return before, await agent.answer(issuance)


async def test_the_bouncer_bounces_within_its_deploy_rbac(
    mesh: Mesh,  # noqa: F811
    agent: Agent,  # noqa: F811
    settings: BouncerSettings,
) -> None:
    before, answer = await _bounce(mesh, agent, settings, ISTIO, "istiod")

    assert answer.data.error is None
    assert [set(s.pods) for s in answer.data.selectors] == [before]
    assert (await mesh.status())["issuanceId"] == answer.issuance


async def test_a_directive_outside_the_rbac_is_answered_with_the_403(
    mesh: Mesh,  # noqa: F811
    agent: Agent,  # noqa: F811
    settings: BouncerSettings,
) -> None:
    # no RoleBinding in `gateways`
    before, answer = await _bounce(mesh, agent, settings, GATEWAYS, "gateway")

    assert answer.data.error is not None
    assert f'User "{BOUNCER}" cannot list resource "pods"' in answer.data.error
    assert await mesh.names(GATEWAYS, "gateway") == before
