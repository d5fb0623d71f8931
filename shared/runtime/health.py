"""Health endpoints for Kubernetes probes: `GET /livez` (alive; `/healthz` is the same) and
`GET /readyz` (ready), and the service's Prometheus metrics at `GET /metrics` on the same port.

`/livez` answers 200 while the event loop runs and every heartbeat is fresh, else 503 naming
the stale ones (`shared.runtime.liveness`): the loop's own (`event-loop`, beaten every second
by a task of this server) and those of the components that asked for one (`heartbeat`). A
loop that cannot run answers nothing, which the probe's timeout fails; a watchdog thread logs
where it is stuck. `/readyz` answers 200 only when every registered check passes (for
example: connected to NATS, informer caches synced), else 503 with the failing checks named, so
a rollout waits for a replica that can actually work. The server is a `Component` (`run(stop)`).

`/metrics` serves the registry the service passed (`shared.runtime.metrics`; an empty one with
only the process figures when none was).

Deliberately not here: the metrics themselves (each service's `metrics.py`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from aiohttp import web
from pydantic import Field

from shared.runtime.liveness import Heartbeat, LoopWatchdog, beat_forever
from shared.runtime.logging import get_logger
from shared.runtime.metrics import CONTENT_TYPE_LATEST, CollectorRegistry, new_registry, render
from shared.runtime.settings import MeshtrustSettings

log = get_logger(__name__)

ReadinessCheck = Callable[[], bool]


class HealthSettings(MeshtrustSettings, env_prefix="MESHTRUST_HEALTH_"):
    host: str = Field(default="0.0.0.0", description="Listen address; all interfaces in a pod.")  # noqa: S104
    port: int = Field(default=8080, ge=0, le=65535, description="0 picks a free port (tests).")
    loop_within: float = Field(
        default=10.0,
        gt=0,
        description="Seconds the event loop may go without running its heartbeat task before "
        "/livez fails; the watchdog logs where the loop is stuck after half of it.",
    )


class HealthServer:
    """Serves the probes until `stop` is set. `port` is known once `started` is set."""

    name = "health"

    def __init__(
        self, settings: HealthSettings, *, registry: CollectorRegistry | None = None
    ) -> None:
        self._settings = settings
        self.registry = registry if registry is not None else new_registry()
        """What `/metrics` serves: the service's registry."""
        self._checks: dict[str, ReadinessCheck] = {}
        self._heartbeats: dict[str, Heartbeat] = {}
        self._loop_beat = self.heartbeat("event-loop", within=settings.loop_within)
        self.port: int | None = None
        self.started = asyncio.Event()

    def add_check(self, name: str, check: ReadinessCheck) -> None:
        """`check()` must be cheap and never raise; False means not ready."""
        self._checks[name] = check

    def heartbeat(self, name: str, *, within: float) -> Heartbeat:
        """A heartbeat `name` that the component beats on progress: `/livez` fails once it is
        `within` seconds old. Choose `within` above the longest quiet the component may have
        (an idle wait that wakes up every second: a few seconds)."""
        beat = Heartbeat(name, within)
        self.watch(beat)
        return beat

    def watch(self, heartbeat: Heartbeat) -> None:
        """Fail `/livez` when `heartbeat` goes stale (a component's own, made by it)."""
        self._heartbeats[heartbeat.name] = heartbeat

    def stale(self) -> list[str]:
        """The heartbeats older than their threshold, by name."""
        return [name for name, beat in self._heartbeats.items() if beat.stale()]

    def failing(self) -> list[str]:
        failed = []
        for name, check in self._checks.items():
            try:
                ok = check()
            except Exception:  # a broken check means not ready, never a crashed probe
                log.exception("readiness check raised", check=name)
                ok = False
            if not ok:
                failed.append(name)
        return failed

    async def _livez(self, _request: web.Request) -> web.Response:
        stale = self.stale()
        if stale:
            return web.Response(status=503, text="not live: " + ", ".join(stale) + "\n")
        return web.Response(text="ok\n")

    async def _readyz(self, _request: web.Request) -> web.Response:
        failed = self.failing()
        if failed:
            return web.Response(status=503, text="not ready: " + ", ".join(failed) + "\n")
        return web.Response(text="ok\n")

    async def _metrics(self, _request: web.Request) -> web.Response:
        response = web.Response(body=render(self.registry))
        # aiohttp refuses a content type with parameters in the constructor: set the header.
        response.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return response

    async def run(self, stop: asyncio.Event) -> None:
        app = web.Application()
        app.router.add_get("/livez", self._livez)
        app.router.add_get("/healthz", self._livez)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/metrics", self._metrics)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        watchdog = LoopWatchdog(asyncio.get_running_loop(), within=self._settings.loop_within / 2)
        watchdog.start()
        beating = asyncio.create_task(beat_forever(self._loop_beat), name="health:loop-beat")
        try:
            site = web.TCPSite(runner, self._settings.host, self._settings.port)
            await site.start()
            server = site._server  # aiohttp keeps the bound sockets here
            sockets = getattr(server, "sockets", None) or []
            self.port = int(sockets[0].getsockname()[1]) if sockets else self._settings.port
            self.started.set()
            log.info("health endpoints up", host=self._settings.host, port=self.port)
            await stop.wait()
        finally:
            beating.cancel()
            watchdog.stop()
            await runner.cleanup()
