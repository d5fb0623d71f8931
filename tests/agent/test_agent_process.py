"""`python -m services.agent` as its own OS process: it starts from environment variables,
becomes ready, survives a SIGKILL in REQUESTED (the next process finishes the same issuance with
the same key), and stops cleanly on SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import aiohttp
import pytest
from agent.agent_testing import FakeIssuer, get_secret, ic_body, ic_status, state_of
from k8s.harness import eventually

from devstack.ports import free_port
from services.agent.objects import key_secret_name
from shared.bus import NatsSettings
from shared.k8s.client import KubeClient
from shared.k8s.resources import ISSUED_CERTIFICATES


async def start(env: dict[str, str], log: Path) -> asyncio.subprocess.Process:
    with log.open("ab") as out:
        return await asyncio.create_subprocess_exec(
            sys.executable, "-m", "services.agent", env=env, stdout=out, stderr=out
        )


async def ready(port: int) -> bool:
    try:
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"http://127.0.0.1:{port}/readyz") as response,
        ):
            return response.status == 200
    except aiohttp.ClientError:
        return False


@pytest.mark.slow
@pytest.mark.usefixtures("others", "trust_bundle")
async def test_the_agent_process_survives_sigkill_in_requested_and_stops_on_sigterm(
    kube: KubeClient,
    namespace: str,
    kubeconfig: Path,
    nats_settings: NatsSettings,
    issuer: FakeIssuer,
    tmp_path: Path,
) -> None:
    port = free_port("127.0.0.1")
    env = {
        **os.environ,
        "MESHTRUST_AGENT_CLUSTER": "east",
        "MESHTRUST_AGENT_INSTANCE": "east-process",
        "MESHTRUST_AGENT_FETCH_TIMEOUT": "0.2",
        "MESHTRUST_AGENT_RESEND_AFTER": "2",
        "MESHTRUST_NATS_URLS": ",".join(nats_settings.urls),
        "MESHTRUST_KUBE_KUBECONFIG": str(kubeconfig),
        "MESHTRUST_HEALTH_HOST": "127.0.0.1",
        "MESHTRUST_HEALTH_PORT": str(port),
    }
    log = tmp_path / "agent.log"
    issuer.mode = "silent"
    first = await start(env, log)
    second: asyncio.subprocess.Process | None = None
    try:
        await eventually(lambda: ready(port), within=30, message="/readyz answering 200")
        await kube.create(ISSUED_CERTIFICATES, ic_body("istio-ca", namespace))
        await eventually(lambda: len(issuer.requests) == 1, within=20, message="the CSR")
        key = await get_secret(kube, namespace, key_secret_name("istio-ca"))
        assert key is not None
        issuance = (await ic_status(kube, namespace, "istio-ca"))["issuanceId"]

        first.kill()
        await first.wait()
        issuer.mode = "sign"
        second = await start(env, log)

        async def finished() -> bool:
            return await state_of(kube, namespace, "istio-ca") == "FINISHED"

        await eventually(finished, within=30, message="FINISHED by the second process")
        assert (await ic_status(kube, namespace, "istio-ca"))["issuanceId"] == issuance
        issued = await get_secret(kube, namespace, "istio-ca-cacerts")
        assert issued is not None
        assert issued["ca-key.pem"] == key["tls.key"]
        assert {r.data.csr_pem.encode() for r in issuer.requests} == {key["csr.pem"]}

        second.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(second.wait(), 30) == 0
    finally:
        for process in (first, second):
            if process is not None and process.returncode is None:
                process.kill()
                await process.wait()
    assert "PRIVATE KEY" not in log.read_text()
