"""An issuer replica is not ready before its informers have listed: a rollout waits for a
replica whose caches are synced, though NATS is up."""

from __future__ import annotations

from pathlib import Path

import aiohttp

from issuer.issuer_testing import world
from issuer.test_issuer_metrics import replica
from shared.bus import NatsSettings
from support.waiting import eventually


async def readiness(port: int) -> tuple[int, str]:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{port}/readyz") as answer,
    ):
        return answer.status, await answer.text()


async def test_the_issuer_is_not_ready_until_its_informers_have_listed(
    tmp_path: Path, nats_settings: NatsSettings
) -> None:
    async with world(tmp_path, nats_settings) as w:
        # Every list of IssuedCertificates fails until the fault is cleared.
        w.api.faults.fail_next(1_000_000, status=503, path_contains="issuedcertificates")
        async with replica(w.settings()) as port:

            async def not_ready_for_the_informers() -> bool:
                status, text = await readiness(port)
                return status == 503 and "informers-synced" in text and "nats" not in text

            await eventually(not_ready_for_the_informers, within=10, message="503 for informers")
            w.api.faults.clear()

            async def ready() -> bool:
                return (await readiness(port))[0] == 200

            await eventually(ready, within=20, message="ready once the informers listed")
