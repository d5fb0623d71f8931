"""Health endpoints over HTTP: liveness always, readiness only when every check passes."""

from __future__ import annotations

import asyncio

import aiohttp

from shared.runtime.health import HealthServer, HealthSettings


async def test_readiness_follows_the_checks_and_liveness_does_not() -> None:
    connected = False
    server = HealthServer(HealthSettings(host="127.0.0.1", port=0))
    server.add_check("nats", lambda: connected)
    server.add_check("broken", lambda: 1 / 0 > 0)  # a raising check means not ready
    stop = asyncio.Event()
    async with asyncio.TaskGroup() as group, aiohttp.ClientSession() as http:
        group.create_task(server.run(stop))
        await server.started.wait()
        base = f"http://127.0.0.1:{server.port}"
        async with http.get(f"{base}/healthz") as answer:
            assert answer.status == 200
        async with http.get(f"{base}/readyz") as answer:
            assert answer.status == 503
            assert "nats, broken" in await answer.text()
        connected = True
        server._checks.pop("broken")
        async with http.get(f"{base}/readyz") as answer:
            assert answer.status == 200
        stop.set()
