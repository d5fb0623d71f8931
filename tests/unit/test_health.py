"""Health endpoints over HTTP: liveness always, readiness only when every check passes."""

from __future__ import annotations

import asyncio

import aiohttp
from prometheus_client import Counter

from shared.runtime.health import HealthServer, HealthSettings
from shared.runtime.metrics import BoundedLabels, new_registry
from support.metrics import scrape


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


async def test_metrics_serves_the_registry_it_was_given_in_the_text_format() -> None:
    registry = new_registry(process=False)
    Counter("meshtrust_test_things", "Things.", ["kind"], registry=registry).labels("a").inc(3)
    server = HealthServer(HealthSettings(host="127.0.0.1", port=0), registry=registry)
    stop = asyncio.Event()
    async with asyncio.TaskGroup() as group:
        group.create_task(server.run(stop))
        await server.started.wait()
        try:
            metrics = await scrape(server.port)
        finally:
            stop.set()
    assert metrics.value("meshtrust_test_things_total", kind="a") == 3.0
    assert metrics.types["meshtrust_test_things"] == "counter"


def test_bounded_labels_keep_the_first_values_and_fold_the_rest_into_other() -> None:
    reasons = BoundedLabels(2, known=("HostsMismatch",))
    assert [reasons(r) for r in ("HostsMismatch", "WeakKey", "Novel", "WeakKey")] == [
        "HostsMismatch",
        "WeakKey",
        "other",
        "WeakKey",
    ]
