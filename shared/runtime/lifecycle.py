"""A service is a set of components run in one TaskGroup, stopped by SIGTERM/SIGINT.

Each component has a `name` and `async def run(stop)`. On a signal (or when the caller sets
`stop`), every component is asked to finish by the `stop` event: consumers stop fetching and let
in-flight work end, watchers return. Components still running after `grace` seconds are
cancelled. If one component fails, the TaskGroup cancels the others and the error propagates:
the process exits non-zero and its supervisor (Kubernetes, the devstack) restarts it.

Deliberately not here: restarting a failed component in-process. A crash-only design keeps the
state machine honest; every component resumes from durable state (JetStream, Kubernetes).
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Sequence
from typing import Protocol

from shared.runtime.liveness import watch_progress
from shared.runtime.logging import get_logger

log = get_logger(__name__)


class Component(Protocol):
    """Anything with a name that runs until `stop` is set (or until it is cancelled)."""

    @property
    def name(self) -> str: ...

    async def run(self, stop: asyncio.Event) -> None: ...


async def supervise(
    components: Sequence[Component],
    *,
    grace: float,
    stop: asyncio.Event | None = None,
    handle_signals: bool = True,
) -> None:
    """Run `components` until they all return; SIGTERM/SIGINT set `stop`; `grace` is in seconds."""
    stop = stop if stop is not None else asyncio.Event()
    watch_progress(components)  # a health server among them watches the others' heartbeats
    loop = asyncio.get_running_loop()
    installed: list[signal.Signals] = []
    if handle_signals:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, _on_signal, sig, stop)
            installed.append(sig)
    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(c.run(stop), name=c.name) for c in components]
            group.create_task(_enforce_grace(stop, tasks, grace), name="grace-period")
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)


def _on_signal(sig: signal.Signals, stop: asyncio.Event) -> None:
    log.info("stopping", signal=sig.name)
    stop.set()


async def _enforce_grace(
    stop: asyncio.Event, tasks: Sequence[asyncio.Task[None]], grace: float
) -> None:
    """Return when every task is done; once `stop` is set, cancel what outlives `grace`."""
    pending: set[asyncio.Future[None]] = set(tasks)
    # The waiter is owned here and cancelled in `finally`: it cannot outlive this coroutine.
    stopping: asyncio.Future[None] = asyncio.ensure_future(_wait_event(stop))
    try:
        while pending and not stop.is_set():
            done, _ = await asyncio.wait(pending | {stopping}, return_when=asyncio.FIRST_COMPLETED)
            pending -= done
        if not pending:
            return
        _, late = await asyncio.wait(pending, timeout=grace)
        for task in late:
            name = task.get_name() if isinstance(task, asyncio.Task) else repr(task)
            log.warning("grace period over, cancelling", component=name, grace_seconds=grace)
            task.cancel()
    finally:
        stopping.cancel()


async def _wait_event(event: asyncio.Event) -> None:
    await event.wait()
