"""The local stack's OS processes: how one is started, waited for and stopped.

Everything here acts on a command line, a pid or a `Process` record (as `.devstack/stack.json`
keeps it), so that a stack started by another process can be inspected and stopped. It does not
know what the processes are, nor in which order they start: that is `devstack.stack`'s.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


class StackError(RuntimeError):
    """The stack could not be brought up; the message says which step and why."""


@dataclass
class Process:
    name: str
    pid: int
    log: str
    health: str | None = None


@dataclass(frozen=True)
class Launch:
    """How to start one service process again."""

    name: str
    command: list[str]
    env: dict[str, str]
    log: Path
    health: str


def start(launch: Launch) -> subprocess.Popen[bytes]:
    """Start the process in a session of its own, stdout and stderr appended to its log."""
    with launch.log.open("ab") as out:
        return subprocess.Popen(
            launch.command,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=launch.env,
            start_new_session=True,
        )


def wait_ready(process: Process) -> None:
    """Until its health URL answers 200; StackError if it exits first or within 60 s."""
    health = process.health
    assert health is not None

    def ready() -> bool:
        if not alive(process.pid):
            raise StackError(f"{process.name} exited: see {process.log}")
        try:
            with urllib.request.urlopen(health, timeout=1) as answer:  # noqa: S310
                return bool(answer.status == 200)
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return False

    wait_for(ready, within=60, what=f"{process.name} to be ready")


def terminate(process: Process, *, timeout: float) -> bool:
    """SIGTERM, then SIGKILL if it is still there after `timeout` seconds; whether it ran."""
    if not alive(process.pid):
        return False
    os.kill(process.pid, signal.SIGTERM)
    try:
        wait_for(lambda: not alive(process.pid), within=timeout, what="")
    except StackError:
        os.kill(process.pid, signal.SIGKILL)
    return True


def alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie child of ours counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ", 1)[1][:1] != "Z"
    except (OSError, IndexError):
        return True


def exited(process: subprocess.Popen[bytes]) -> bool:
    return process.poll() is not None


def wait_for(check: Callable[[], bool], *, within: float, what: str) -> None:
    """Poll `check` every 50 ms; StackError naming `what` if it is not true within `within` s."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise StackError(f"timed out after {within:.0f} s waiting for {what}")
