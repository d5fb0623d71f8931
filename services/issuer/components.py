"""Adapters that give informers, controllers and periodic tasks the `Component` shape
(`name`, `run(stop)`) that `shared.runtime.supervise` runs.

Each runs its work in a TaskGroup of its own, so a failure propagates (and stops the service:
crash-only), and `stop` ends it: informers are cancelled (they hold no work), controllers are
asked to finish their in-flight reconciles first.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from shared.k8s import Controller, Informer


class InformerComponent:
    def __init__(self, name: str, informer: Informer) -> None:
        self.name = name
        self.informer = informer

    async def run(self, stop: asyncio.Event) -> None:
        async with asyncio.TaskGroup() as group:
            task = group.create_task(self.informer.run(), name=self.name)
            await stop.wait()
            task.cancel()


class ControllerComponent:
    def __init__(self, controller: Controller, informers: list[Informer]) -> None:
        self.name = controller.name
        self.controller = controller
        self._informers = informers

    async def run(self, stop: asyncio.Event) -> None:
        async with asyncio.TaskGroup() as group:
            task = group.create_task(self.controller.run(), name=self.name)
            await stop.wait()
            self.controller.stop()
            if not all(informer.has_synced for informer in self._informers):
                # Still waiting for caches that will never fill now: nothing is in flight.
                task.cancel()


class PeriodicComponent:
    """Calls `work()` once `ready()` returns, then every `interval` seconds, until stop."""

    def __init__(
        self,
        name: str,
        work: Callable[[], Awaitable[None]],
        *,
        interval: float,
        ready: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.name = name
        self._work = work
        self._interval = interval
        self._ready = ready

    async def run(self, stop: asyncio.Event) -> None:
        if self._ready is not None and not await _until(stop, self._ready()):
            return
        while not stop.is_set():
            await self._work()
            try:
                async with asyncio.timeout(self._interval):
                    await stop.wait()
            except TimeoutError:
                continue


async def _until(stop: asyncio.Event, awaitable: Awaitable[None]) -> bool:
    """Await `awaitable` unless `stop` comes first; True if it completed."""
    async with asyncio.TaskGroup() as group:
        work = group.create_task(_wrap(awaitable))
        stopping = group.create_task(stop.wait())
        done, _ = await asyncio.wait({work, stopping}, return_when=asyncio.FIRST_COMPLETED)
        for task in (work, stopping):
            if task not in done:
                task.cancel()
    return work in done and not work.cancelled()


async def _wrap(awaitable: Awaitable[None]) -> None:
    await awaitable
