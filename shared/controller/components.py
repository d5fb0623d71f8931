"""Components for `shared.runtime.supervise` built from the generic parts of a controller.

`supervise` runs anything with a `name` and `async def run(stop)`. These adapters give that
shape to the long-running parts every service has: a coroutine that runs until cancelled
(`Task`: an informer, a watch), a `Controller` that must finish its in-flight reconciles before
it returns (`ControllerComponent`), and work repeated on an interval (`PeriodicComponent`).
Each runs its work in a TaskGroup of its own, so a failure propagates and stops the service
(crash-only), and `stop` ends it.

Here, in `shared.controller`, because the agent and the issuer each had their own copies.
Deliberately not here: what the components do (the services build them) and restarting a
failed one (the process's supervisor does).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

from shared.k8s.controller import Controller
from shared.k8s.informer import Informer
from shared.runtime.concurrency import pause, raise_if_cancelled

__all__ = ["ControllerComponent", "PeriodicComponent", "Task"]


class Task:
    """A coroutine that runs until cancelled, as a Component: cancelled when `stop` is set."""

    def __init__(self, name: str, factory: Callable[[], Awaitable[None]]) -> None:
        self.name = name
        self._factory = factory

    async def run(self, stop: asyncio.Event) -> None:
        async with asyncio.TaskGroup() as group:
            work = group.create_task(_as_coroutine(self._factory), name=self.name)
            stopping = group.create_task(stop.wait(), name=f"{self.name}:stop")
            await asyncio.wait({work, stopping}, return_when=asyncio.FIRST_COMPLETED)
            work.cancel()
            stopping.cancel()


class ControllerComponent:
    """A `Controller` as a Component: on `stop`, in-flight reconciles finish, then it returns
    (at once if its informers never synced: there is nothing in flight to wait for)."""

    def __init__(self, controller: Controller, informers: Sequence[Informer]) -> None:
        self.controller = controller
        self.name = f"controller:{controller.name}"
        self._informers = informers

    async def run(self, stop: asyncio.Event) -> None:
        async with asyncio.TaskGroup() as group:
            work = group.create_task(self.controller.run(), name=self.name)
            stopping = group.create_task(stop.wait(), name=f"{self.name}:stop")
            await asyncio.wait({work, stopping}, return_when=asyncio.FIRST_COMPLETED)
            stopping.cancel()
            self.controller.stop()
            if not all(informer.has_synced for informer in self._informers):
                # Still waiting for caches that will never fill now: nothing is in flight.
                work.cancel()


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
            raise_if_cancelled()  # work that catches the bus's errors may have swallowed it
            await pause(stop, self._interval)


async def _until(stop: asyncio.Event, awaitable: Awaitable[None]) -> bool:
    """Await `awaitable` unless `stop` comes first; True if it completed."""
    async with asyncio.TaskGroup() as group:
        work = group.create_task(_as_coroutine(lambda: awaitable))
        stopping = group.create_task(stop.wait())
        done, _ = await asyncio.wait({work, stopping}, return_when=asyncio.FIRST_COMPLETED)
        for task in (work, stopping):
            if task not in done:
                task.cancel()
    return work in done and not work.cancelled()


async def _as_coroutine(factory: Callable[[], Awaitable[None]]) -> None:
    await factory()
