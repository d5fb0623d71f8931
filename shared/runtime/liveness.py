"""Liveness beyond "the event loop answers": heartbeats of components and a loop watchdog.

A kubelet's liveness probe with a timeout already fails a process whose event loop cannot run
(nothing answers `/livez`). What it cannot see is a loop that runs while a component is stuck
(a fetch loop awaiting something that never comes, a watch that stopped), or a loop that is
starved or blocked again and again for seconds at a time. So:

- a `Heartbeat` per long-running component that it beats whenever it makes progress (an
  iteration of its loop, including an idle one); `/livez` answers 503 naming any whose last
  beat is older than its `within` (`shared.runtime.health`);
- the health server's own `event-loop` heartbeat, beaten by a task every second: stale when
  the loop could not run that task for `within` (a loop starved by a busy coroutine, or one
  that was blocked and is catching up);
- `LoopWatchdog`, a thread (it runs while the loop is blocked, which nothing on the loop can):
  when the loop has not answered for `within` it logs "event loop stuck" once, with where the
  loop's thread is (the stack), and "event loop running again" with how long it was stuck.
  It cannot answer a probe itself; the probe's timeout does that.

Deliberately not here: restarting anything (the kubelet does, on a failed probe).
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time
import traceback
from collections.abc import Iterable
from typing import Protocol, runtime_checkable

from shared.runtime.logging import get_logger

log = get_logger(__name__)


class Heartbeat:
    """One component's progress: `beat()` on progress; stale `within` seconds after the last."""

    def __init__(self, name: str, within: float) -> None:
        self.name = name
        self.within = within
        self._last = time.monotonic()

    def beat(self) -> None:
        self._last = time.monotonic()

    @property
    def last(self) -> float:
        """`time.monotonic()` of the last beat."""
        return self._last

    def age(self) -> float:
        """Seconds since the last beat (or since it was made)."""
        return time.monotonic() - self._last

    def stale(self) -> bool:
        return self.age() > self.within


@runtime_checkable
class Progressing(Protocol):
    """A component that says it makes progress (a `Consumer`: its fetch loop)."""

    @property
    def progress(self) -> Heartbeat: ...


@runtime_checkable
class Watcher(Protocol):
    """What serves `/livez` (`shared.runtime.health.HealthServer`)."""

    def watch(self, heartbeat: Heartbeat) -> None: ...


def watch_progress(components: Iterable[object]) -> None:
    """Have every `Watcher` among `components` watch the heartbeat of every `Progressing` one:
    what `shared.runtime.lifecycle.supervise` does with the components it runs."""
    items = list(components)
    for watcher in items:
        if isinstance(watcher, Watcher):
            for component in items:
                if isinstance(component, Progressing):
                    watcher.watch(component.progress)


async def beat_forever(heartbeat: Heartbeat, interval: float = 1.0) -> None:
    """Beat `heartbeat` every `interval` for as long as the loop can run this task."""
    while True:
        heartbeat.beat()
        await asyncio.sleep(interval)


class LoopWatchdog:
    """A daemon thread that pokes the loop every `interval` and logs when it stops answering
    for `within` seconds (with the loop thread's stack) and when it answers again."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, *, within: float = 5.0, interval: float = 0.5
    ) -> None:
        self._loop = loop
        self._loop_thread = threading.get_ident()
        self.within = within
        self._interval = interval
        self._answered = time.monotonic()
        self._halt = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="loop-watchdog", daemon=True)
        self.stuck_reports = 0
        """How many times the loop was found stuck (for tests and curiosity)."""

    def _pong(self) -> None:
        self._answered = time.monotonic()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._halt.set()
        self._thread.join(timeout=2 * self._interval)  # a daemon: never wait longer for it

    def _watch(self) -> None:
        stuck_since: float | None = None
        while not self._halt.wait(self._interval):
            try:
                self._loop.call_soon_threadsafe(self._pong)
            except RuntimeError:  # the loop is closed
                return
            silent = time.monotonic() - self._answered
            if stuck_since is None and silent > self.within:
                stuck_since = self._answered
                self.stuck_reports += 1
                log.error("event loop stuck", seconds=round(silent, 1), where=self._where())
            elif stuck_since is not None and silent <= self._interval * 2:
                stuck_for = self._answered - stuck_since
                log.warning("event loop running again", stuck_for=round(stuck_for, 1))
                stuck_since = None

    def _where(self) -> str:
        frame = sys._current_frames().get(self._loop_thread)
        return "".join(traceback.format_stack(frame, limit=8)) if frame is not None else "?"
