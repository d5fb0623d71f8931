"""The local stack's OS processes: how one is started, waited for and stopped.

Everything here acts on a command line, a pid or a `Process` record (as `.devstack/stack.json`
keeps it), so that a stack started by another process can be inspected and stopped. It does not
know what the processes are, nor in which order they start: that is `devstack.stack`'s.

Ports are never picked here and handed to a child: a service binds port 0 itself and logs the
port it got ("health endpoints up"), which `wait_ready` reads from the lines it wrote since it
started (`Process.log_offset`). A readiness probe counts only when the listening socket on that
port belongs to the process probed (`listens`), so another process that took the port cannot
answer for it. Linux only (`/proc`), as the whole local stack.
"""

from __future__ import annotations

import json
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
    log_offset: int = 0
    """Where this run's lines start in `log` (a restart appends to the same file)."""


@dataclass(frozen=True)
class Launch:
    """How to start one service process again (it binds its health port itself: port 0)."""

    name: str
    command: list[str]
    env: dict[str, str]
    log: Path


HEALTH_UP = "health endpoints up"
"""The event a service logs (JSON, with `port`) once its health server listens."""


def start(launch: Launch) -> tuple[subprocess.Popen[bytes], Process]:
    """Start the process in a session of its own, stdout and stderr appended to its log; its
    record, whose `health` URL `wait_ready` fills in once the process says which port it got."""
    with launch.log.open("ab") as out:
        offset = out.tell()
        child = subprocess.Popen(
            launch.command,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=launch.env,
            start_new_session=True,
        )
    return child, Process(launch.name, child.pid, str(launch.log), log_offset=offset)


def bound_port(process: Process) -> int | None:
    """The health port this run of `process` logged it bound, if it has yet."""
    try:
        with open(process.log, "rb") as log:
            log.seek(process.log_offset)
            lines = log.read().splitlines()
    except OSError:
        return None
    for line in lines:
        if HEALTH_UP.encode() not in line:
            continue
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and record.get("event") == HEALTH_UP:
            return int(record["port"])
    return None


def listens(pid: int, port: int) -> bool:
    """Whether `pid` holds the socket listening on TCP `port` (from /proc: the socket's inode
    among the process's open files), so that an answer on `port` is this process's."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as rows:
                next(rows, None)
                for row in rows:
                    fields = row.split()
                    local, state, inode = fields[1], fields[3], fields[9]
                    if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:
                        inodes.add(f"socket:[{inode}]")
        except OSError:
            continue
    try:
        descriptors = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False
    for fd in descriptors:
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") in inodes:
                return True
        except OSError:
            continue
    return False


def probe(process: Process) -> bool:
    """One readiness probe: 200 from `process.health`, served by `process` itself."""
    return readiness(process) == ""


def readiness(process: Process) -> str:
    """Why `process` is not ready ("" when it is): its own /readyz's answer, or what is amiss."""
    health = process.health
    if health is None:
        return "no health port logged yet"
    port = int(health.rsplit(":", 1)[1].split("/", 1)[0])
    if not listens(process.pid, port):
        return f"port {port} is not its own"
    try:
        with urllib.request.urlopen(health, timeout=1) as answer:  # noqa: S310
            return "" if answer.status == 200 else f"/readyz answered {answer.status}"
    except urllib.error.HTTPError as exc:
        return f"/readyz answered {exc.code}: {exc.read().decode(errors='replace').strip()}"
    except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
        return f"/readyz unreachable: {exc}"


def wait_ready(process: Process, *, within: float = 60.0) -> None:
    """Until the process has logged its health port and its own /readyz answers 200 there;
    StackError naming it, with its last log lines, if it exits first or within `within` s
    (then with why it is not ready, e.g. the readiness checks its /readyz names as failing)."""
    why = ""

    def ready() -> bool:
        nonlocal why
        why = not_ready(process)
        return not why

    try:
        wait_for(ready, within=within, what=f"{process.name} to be ready")
    except StackError as exc:
        if "timed out" not in str(exc):
            raise
        raise StackError(f"{exc} ({why}); its last log lines:\n{tail(process)}") from None


def not_ready(process: Process) -> str:
    """One look: why `process` is not ready ("" when it is); StackError if it exited. Fills in
    `process.health` once the process has logged its port."""
    if not alive(process.pid):
        raise StackError(f"{process.name} exited; its last log lines:\n{tail(process)}")
    if process.health is None:
        port = bound_port(process)
        if port is not None:
            process.health = f"http://127.0.0.1:{port}/readyz"
    return readiness(process)


def tail(process: Process, lines: int = 15) -> str:
    """The last `lines` lines this run of `process` wrote to its log, indented."""
    try:
        with open(process.log, "rb") as log:
            log.seek(process.log_offset)
            text = log.read().decode(errors="replace")
    except OSError:
        return "    (no log)"
    last = text.splitlines()[-lines:]
    return "\n".join(f"    {line}" for line in last) if last else "    (nothing logged)"


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


def rss_bytes(pid: int) -> int | None:
    """Resident memory of `pid` (VmRSS in /proc), None if it is gone."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def memory_kib(pid: int) -> dict[str, int]:
    """VmRSS, RssAnon (its private heap: what N processes cost N times) and RssFile (mapped
    files, shared libraries among them: shared between processes) of `pid`, in KiB; {} if gone."""
    out: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                key, _, value = line.partition(":")
                if key in {"VmRSS", "RssAnon", "RssFile"}:
                    out[key] = int(value.split()[0])
    except OSError:
        return {}
    return out


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time `pid` has used so far, None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(") ", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
