"""`/livez`: a component that stops making progress turns it 503, named, within its threshold;
a blocked event loop answers no probe (the kubelet's timeout fails it) and the watchdog thread
says where it is stuck (`shared.runtime.liveness`)."""

from __future__ import annotations

import asyncio
import threading
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp
from integration.bus_harness import Recorder, all_events_consumer, running
from structlog.testing import capture_logs

from shared.bus import Bus
from shared.runtime.health import HealthServer, HealthSettings
from shared.runtime.lifecycle import supervise
from shared.runtime.liveness import Heartbeat
from support.events import sample_events
from support.waiting import eventually


@asynccontextmanager
async def serving(server: HealthServer) -> AsyncIterator[str]:
    stop = asyncio.Event()
    async with asyncio.TaskGroup() as group:
        group.create_task(server.run(stop))
        await server.started.wait()
        try:
            yield f"http://127.0.0.1:{server.port}"
        finally:
            stop.set()


async def status(url: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as http, http.get(url) as answer:
        return answer.status, await answer.text()


async def test_a_component_that_stops_beating_fails_livez_by_name() -> None:
    server = HealthServer(HealthSettings(host="127.0.0.1", port=0))
    fetcher = server.heartbeat("consumer:issuer", within=1.0)
    watcher = server.heartbeat("informer:pods", within=1.0)
    stuck = asyncio.Event()

    async def fetch_loop() -> None:  # progresses until it is stuck
        while not stuck.is_set():
            fetcher.beat()
            watcher.beat()
            await asyncio.sleep(0.1)
        while True:
            watcher.beat()  # this one keeps going
            await asyncio.sleep(0.1)

    async with serving(server) as base:
        work = asyncio.create_task(fetch_loop())
        try:
            assert await status(f"{base}/livez") == (200, "ok\n")
            stuck.set()
            # The threshold (1 s), and some room for a loaded machine.
            answer = await eventually(
                lambda: _failing(f"{base}/livez"), within=3.0, message="livez 503"
            )
            assert answer == "not live: consumer:issuer\n"
            assert (await status(f"{base}/healthz"))[0] == 503, "the old path is the same probe"
            fetcher.beat()
            assert await status(f"{base}/livez") == (200, "ok\n")
        finally:
            work.cancel()


async def _failing(url: str) -> str | None:
    code, text = await status(url)
    return text if code == 503 else None


def _probe(url: str, timeout: float) -> int:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as answer:  # noqa: S310 - http only
            return int(answer.status)
    except TimeoutError:
        return 0
    except urllib.error.HTTPError as exc:
        return exc.code


async def test_a_blocked_loop_answers_no_probe_and_the_watchdog_says_where() -> None:
    server = HealthServer(HealthSettings(host="127.0.0.1", port=0, loop_within=1.0))
    blocked = threading.Event()
    probed: list[int] = []

    def kubelet(url: str) -> None:
        blocked.wait()
        probed.append(_probe(url, timeout=1.0))

    def wedge_the_loop() -> None:  # a component that blocks the loop (the fault under test)
        blocked.set()
        time.sleep(4.0)  # room for the probe thread to be scheduled on a loaded machine

    with capture_logs() as logs:
        async with serving(server) as base:
            probe = threading.Thread(target=kubelet, args=(f"{base}/livez",))
            probe.start()
            asyncio.get_running_loop().call_soon(wedge_the_loop)
            await asyncio.to_thread(probe.join)  # the loop blocks first, in wedge_the_loop
            assert probed == [0], "no answer within the probe's timeout: the probe fails"
            await eventually(
                lambda: _live(f"{base}/livez"), within=5.0, message="live again once it runs"
            )
            await eventually(
                lambda: any(e["event"] == "event loop running again" for e in logs),
                message="recovery logged",
            )
    stuck = [e for e in logs if e["event"] == "event loop stuck"]
    assert len(stuck) == 1
    assert "wedge_the_loop" in stuck[0]["where"]


async def _live(url: str) -> bool:
    return (await status(url))[0] == 200


class Wedged:
    """A component whose work loop stopped making progress (it never beats again)."""

    name = "wedged"

    def __init__(self) -> None:
        self.progress = Heartbeat("wedged", within=0.5)

    async def run(self, stop: asyncio.Event) -> None:
        await stop.wait()


async def test_supervise_has_the_health_server_watch_its_components_progress() -> None:
    health = HealthServer(HealthSettings(host="127.0.0.1", port=0))
    stop = asyncio.Event()
    async with asyncio.TaskGroup() as group:
        group.create_task(supervise([Wedged(), health], grace=1, stop=stop, handle_signals=False))
        await health.started.wait()
        try:
            answer = await eventually(
                lambda: _failing(f"http://127.0.0.1:{health.port}/livez"),
                within=3.0,
                message="livez 503",
            )
            assert answer == "not live: wedged\n"
        finally:
            stop.set()


async def test_a_consumer_beats_while_idle_and_while_every_slot_is_busy(bus: Bus) -> None:
    release = asyncio.Event()

    async def hold(event: object, delivery: object) -> None:
        await release.wait()

    recorder = Recorder(behaviour=hold)  # type: ignore[arg-type]
    consumer = bus.consumer(all_events_consumer(max_in_flight=1, batch=1), recorder)
    async with running(consumer):
        mark = time.monotonic()
        await eventually(lambda: consumer.progress.last > mark, message="beats while idle")
        await bus.publish(sample_events("east")[0])
        await eventually(lambda: len(recorder.events) == 1, message="the only slot busy")
        mark = time.monotonic()
        await eventually(lambda: consumer.progress.last > mark, message="beats while busy")
        release.set()
