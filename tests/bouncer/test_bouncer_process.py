"""`python -m services.bouncer` as its own OS process: configured by the environment only,
answers a request, serves its probes, logs JSON with the cluster and issuance, and stops
cleanly on SIGTERM."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path

import aiohttp
import pytest

from devstack.kubeapi import KubeAPI
from devstack.natsserver import NatsServer
from devstack.ports import free_port
from shared.events import new_issuance_id
from support.waiting import eventually

from .conftest import GATEWAYS, ISTIO, Agent, Mesh, selector

ROOT = Path(__file__).parents[2]

pytestmark = pytest.mark.slow


async def test_the_bouncer_process_answers_a_request_and_stops_on_sigterm(
    mesh: Mesh, agent: Agent, nats_server: NatsServer, cluster: KubeAPI, tmp_path: Path
) -> None:
    await mesh.install(istiod=1, gateways=1)
    await mesh.directive(selector(ISTIO, "istiod", 1), selector(GATEWAYS, "gateway", 1))
    issuance = new_issuance_id()
    await mesh.certificate(issuance)
    port = free_port()
    env = {
        "PATH": os.environ.get("PATH", ""),
        "MESHTRUST_BOUNCER_CLUSTER": "east",
        "MESHTRUST_BOUNCER_INSTANCE": "bouncer-0",
        "MESHTRUST_NATS_URLS": nats_server.url,
        "MESHTRUST_KUBE_KUBECONFIG": str(cluster.write_kubeconfig(tmp_path / "kubeconfig")),
        "MESHTRUST_HEALTH_HOST": "127.0.0.1",
        "MESHTRUST_HEALTH_PORT": str(port),
        "MESHTRUST_LOG_LEVEL": "info",
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services.bouncer",
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with aiohttp.ClientSession() as http:

            async def ready() -> bool:
                try:
                    async with http.get(f"http://127.0.0.1:{port}/readyz") as response:
                        return response.status == 200
                except aiohttp.ClientError:
                    return False

            await eventually(ready, within=20, message="the bouncer's /readyz")
        await agent.ask(issuance)
        answer = await agent.answer(issuance)
        assert answer.data.error is None
        assert answer.source == "bouncer/bouncer-0"
        assert [len(s.pods) for s in answer.data.selectors] == [1, 1]
        proc.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(proc.communicate(), 20)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0
    lines = [json.loads(line) for line in err.decode().splitlines() if line.startswith("{")]
    finished = [line for line in lines if line.get("event") == "bounce.finished"]
    assert finished
    assert finished[0]["cluster"] == "east"
    assert finished[0]["issuance"] == issuance
    assert finished[0]["directive"] == "istio-system/istio-ca"
