"""One loop watchdog per hollow process, not one per service in it.

Each service's health server starts a `shared.runtime.liveness.LoopWatchdog`: a thread that
pokes the event loop twice a second. In a service's own process that is one thread for one
loop; in a hollow process it would be a thread for each of its hundreds of services, all
watching the same loop (500 threads for 250 clusters, 1,000 wake-ups a second fighting for
the GIL: it multiplied the machine's load average by ten at N = 1,000). `share_loop_watchdog`
makes the first watchdog of the process a real one and every later one a no-op, so the process
keeps exactly what a service process has: one watchdog for its one loop.
"""

from __future__ import annotations

import asyncio
from typing import Any

import shared.runtime.health as health
from shared.runtime.liveness import LoopWatchdog


class _Idle:
    """A watchdog that does not watch: the process's first one watches the shared loop."""

    def start(self) -> None:
        return None

    def stop(self) -> None:
        return None


def share_loop_watchdog() -> None:
    """From now on in this process, health servers share the first one's loop watchdog."""
    started: list[LoopWatchdog] = []

    def watchdog(loop: asyncio.AbstractEventLoop, **options: Any) -> LoopWatchdog | _Idle:
        if started:
            return _Idle()
        started.append(LoopWatchdog(loop, **options))
        return started[0]

    setattr(health, "LoopWatchdog", watchdog)  # noqa: B010 (mypy: the name is not re-exported)
