"""Starting many service processes without starving them: at most a few start at once.

A service spends most of its start-up on the CPU (imports, TLS contexts, the first lists and
watches: ~0.5 s of CPU for an agent, docs/benchmarks.md). Starting 200 of them at once (a
100-cluster demo) on 2 cores gave each a 1/100th share of a core: none was ready for a minute,
their own timeouts (NATS connect, first list) fired, and the stack failed to come up. `bounded`
starts them in order and keeps at most `at_once` started and not yet ready; the next one starts
as soon as one becomes ready. The total CPU is the same; no process waits for a core for long.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Iterator

from devstack.processes import Process, StackError, not_ready, tail

__all__ = ["AT_ONCE", "bounded"]

AT_ONCE = max(2, 2 * (os.cpu_count() or 1))
"""Two starting processes per core: one on the CPU while the other waits on the network."""

POLL_SECONDS = 0.05


def bounded(
    starts: Iterable[Callable[[], Process]],
    *,
    at_once: int = AT_ONCE,
    within: float = 60.0,
    check: Callable[[Process], str] = not_ready,
    clock: Callable[[], float] = time.monotonic,
    pause: Callable[[float], None] = time.sleep,
) -> Iterator[Process]:
    """Call each of `starts` in order, yielding each process as it starts (the caller records
    it), with at most `at_once` of them started and not ready yet; returns once all are ready.
    StackError (naming the process, with its last log lines) if one exits, or is not ready
    within `within` seconds of its own start. `check` tells why a process is not ready ("":
    ready), and raises StackError when it exited."""
    if at_once < 1:
        raise ValueError(f"at_once must be at least 1, not {at_once}")
    pending = iter(starts)
    starting: dict[str, tuple[Process, float]] = {}
    exhausted = False
    while True:
        while not exhausted and len(starting) < at_once:
            start = next(pending, None)
            if start is None:
                exhausted = True
                break
            process = start()
            starting[process.name] = (process, clock())
            yield process
        if not starting:
            return
        _drop_ready(starting, check, within=within, now=clock())
        if len(starting) >= at_once or (exhausted and starting):
            pause(POLL_SECONDS)


def _drop_ready(
    starting: dict[str, tuple[Process, float]],
    check: Callable[[Process], str],
    *,
    within: float,
    now: float,
) -> None:
    for name, (process, since) in list(starting.items()):
        why = check(process)
        if not why:
            del starting[name]
        elif now - since > within:
            raise StackError(
                f"timed out after {within:.0f} s waiting for {name} to be ready ({why}); "
                f"its last log lines:\n{tail(process)}"
            )
