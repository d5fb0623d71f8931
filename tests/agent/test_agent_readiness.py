"""The agent is not ready before its informers have listed: a rollout waits for a replica whose
caches are synced, though NATS is up."""

from __future__ import annotations

from collections.abc import Callable

import aiohttp
from agent.agent_testing import AgentProcess
from agent.test_agent_metrics import health_port

from devstack.kubeapi import KubeAPI
from services.agent.settings import AgentSettings
from support.waiting import eventually


async def readiness(port: int) -> tuple[int, str]:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{port}/readyz") as answer,
    ):
        return answer.status, await answer.text()


async def test_the_agent_is_not_ready_until_its_informers_have_listed(
    others: None, make_settings: Callable[..., AgentSettings], kubeapi: KubeAPI
) -> None:
    # Every list of IssuedCertificates fails until the fault is cleared.
    kubeapi.faults.fail_next(1_000_000, status=503, path_contains="issuedcertificates")
    agent = AgentProcess(make_settings())
    await agent.start()
    try:
        port = await health_port(agent)

        async def not_ready_for_the_caches() -> bool:
            status, text = await readiness(port)
            return status == 503 and "kubernetes-caches" in text and "nats" not in text

        await eventually(not_ready_for_the_caches, within=10, message="503 naming the caches")
        kubeapi.faults.clear()
        await eventually(
            lambda: _status_is(port, 200), within=20, message="ready once the informers listed"
        )
    finally:
        await agent.stop()


async def _status_is(port: int, status: int) -> bool:
    return (await readiness(port))[0] == status
