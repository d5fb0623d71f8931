"""The local stack's supervisor: one long-lived process that owns the stack and restarts what dies.

`meshtrust devstack up` starts `python -m devstack.supervisor` in a session of its own and
returns once it reports the stack up (or failed, naming the process and its last log lines).
The supervisor runs `devstack.stack.Stack.up()`, so every process of the stack is its child,
then loops every `TICK` seconds:

- a process that exited without being asked to (a crash, a kill) is started again after a
  capped exponential backoff (`Backoff`), as docker compose's `restart: on-failure` and
  supervisord do; every exit and restart is a line in `logs/supervisor.log`;
- operator requests (`stop`, `start`, `restart` of one process) are files in `control/`,
  answered with a file there (`request()` writes one and waits for the answer);
- what it sees is written to `supervisor.json` (`read()`): its own pid, the phase
  (`starting`, `up`, `failed`, `down`) and, per process, its state (`running`, `backoff`,
  `stopped`), pid, restarts, start time and last exit; `meshtrust devstack status` reads it.

SIGTERM (`shutdown()`) stops the stack (services first, as `Stack.down()`); the state stays
for the next `up` unless purged. Not here: how a process is started or probed
(`devstack.processes`), which processes there are (`devstack.stack`).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from devstack import processes
from devstack.processes import Process, StackError
from devstack.stack import Stack, StackInfo

STATE = "supervisor.json"
CONTROL = "control"
TICK = 0.2
"""Seconds between two looks at the processes: how soon a crash is noticed."""
ACTIONS = ("stop", "start", "restart")


@dataclass(frozen=True)
class Backoff:
    """How long a crashed process waits before its next start: `initial` seconds after the
    first crash, doubling per consecutive crash up to `cap`. A process that ran `reset_after`
    seconds had recovered: its next crash starts from `initial` again."""

    initial: float = 0.5
    factor: float = 2.0
    cap: float = 30.0
    reset_after: float = 60.0

    def delay(self, failures: int) -> float:
        return float(min(self.cap, self.initial * self.factor ** max(0, failures - 1)))


@dataclass
class Supervised:
    """One process as the supervisor sees it (as `supervisor.json` keeps it)."""

    name: str
    pid: int
    state: str = "running"
    restarts: int = 0
    failures: int = 0
    """Consecutive crashes: the backoff's exponent."""
    started_at: float = 0.0
    """Wall-clock time of the current run's start (uptime), 0 when not running."""
    next_start: float = 0.0
    """Wall-clock time of the next start while in backoff."""
    last_exit: str = ""


class Supervisor:
    """Runs `stack` and keeps its processes running. Not thread-safe: one loop calls `step`."""

    def __init__(
        self,
        stack: Stack,
        *,
        backoff: Backoff | None = None,
        clock: Callable[[], float] = time.time,
        say: Callable[[str], None] = print,
    ) -> None:
        self.stack = stack
        self.backoff = backoff or Backoff()
        self.clock = clock
        self.say = say
        self.phase = "starting"
        self.error = ""
        self.stopped: list[str] = []
        self.entries: dict[str, Supervised] = {}
        self.control = stack.root / CONTROL

    def up(self) -> None:
        self.save()
        try:
            info = self.stack.up()
        except StackError as exc:
            self.phase, self.error = "failed", str(exc)
            self.save()
            raise
        now = self.clock()
        self.entries = {p.name: Supervised(p.name, p.pid, started_at=now) for p in info.processes}
        self.phase = "up"
        self.save()

    def step(self) -> None:
        """Notice exits, start what is due, answer requests, write the state."""
        now = self.clock()
        for entry in self.entries.values():
            if entry.state == "running":
                code = self.stack.exit_code(entry.name)
                if code is not None:
                    self._crashed(entry, code, now)
            elif entry.state == "backoff" and now >= entry.next_start:
                self._restart(entry)
        for path in sorted(self.control.glob("*.request.json")):
            self._answer(path)
        self.save()

    def _crashed(self, entry: Supervised, code: int, now: float) -> None:
        # A start that failed (started_at 0) is one more consecutive crash, not a recovery.
        recovered = entry.started_at > 0 and now - entry.started_at >= self.backoff.reset_after
        entry.failures = 1 if recovered else entry.failures + 1
        delay = self.backoff.delay(entry.failures)
        entry.last_exit = f"exit code {code}" if code >= 0 else f"killed by signal {-code}"
        entry.state, entry.started_at, entry.next_start = "backoff", 0.0, now + delay
        self.say(f"{entry.name} exited ({entry.last_exit}); starting it again in {delay:.1f} s")

    def _restart(self, entry: Supervised) -> None:
        try:
            self._start(entry)
        except StackError as exc:
            self._crashed(entry, self.stack.exit_code(entry.name) or 1, self.clock())
            entry.last_exit = str(exc).splitlines()[0]
            return
        entry.restarts += 1
        self.say(f"{entry.name} restarted (pid {entry.pid}, restart {entry.restarts})")

    def _start(self, entry: Supervised) -> None:
        with contextlib.suppress(KeyError):
            self.stack.kill(entry.name)  # reap what is left of the previous run
        fresh = self.stack.start(entry.name)
        entry.pid, entry.state, entry.started_at = fresh.pid, "running", self.clock()

    def _answer(self, path: Path) -> None:
        request = json.loads(path.read_text())
        action, name = request.get("action"), request.get("name")
        entry = self.entries.get(name or "")
        if action not in ACTIONS or entry is None:
            answer = {"ok": False, "message": f"no such action or process: {action} {name}"}
        else:
            try:
                answer = {"ok": True, "message": self._operate(action, entry)}
            except StackError as exc:
                answer = {"ok": False, "message": str(exc)}
        reply = path.with_name(path.name.replace(".request.", ".reply."))
        write_atomically(reply, json.dumps(answer))
        path.unlink()

    def _operate(self, action: str, entry: Supervised) -> str:
        if action in {"stop", "restart"} and entry.state == "running":
            self.stack.kill(entry.name, signal.SIGTERM)
            entry.last_exit = f"stopped by {action}"
        if action == "stop":
            entry.state, entry.started_at = "stopped", 0.0
            self.say(f"{entry.name} stopped on request")
            return f"{entry.name} stopped"
        if action == "start" and entry.state == "running":
            return f"{entry.name} is running already (pid {entry.pid})"
        self._start(entry)
        entry.failures = 0
        if action == "restart":
            entry.restarts += 1
        self.say(f"{entry.name} {action}ed on request (pid {entry.pid})")
        return f"{entry.name} {action}ed (pid {entry.pid})"

    def down(self, *, purge: bool = False) -> None:
        self.stopped = self.stack.down(purge=purge)
        self.phase = "down"
        for entry in self.entries.values():
            entry.state, entry.started_at = "stopped", 0.0
        if not purge:
            self.save()

    def save(self) -> None:
        state = {
            "pid": os.getpid(),
            "phase": self.phase,
            "error": self.error,
            "stopped": self.stopped,
            "processes": [asdict(e) for e in self.entries.values()],
        }
        write_atomically(self.stack.root / STATE, json.dumps(state, indent=2) + "\n")


def write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


# --- the supervisor process ---------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devstack.supervisor")
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--clusters", required=True, help="remote clusters, comma separated")
    parser.add_argument("--pod-ready-delay", type=float, default=0.5)
    parser.add_argument("--nats-nodes", type=int, help="NATS servers (default: kept, else 1)")
    args = parser.parse_args(argv)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    stack = Stack(
        args.root,
        remotes=args.clusters.split(","),
        pod_ready_delay=args.pod_ready_delay,
        nats_nodes=args.nats_nodes,
    )
    supervisor = Supervisor(stack, say=lambda line: print(f"{time.strftime('%T')} {line}"))
    supervisor.control.mkdir(parents=True, exist_ok=True)
    try:
        supervisor.up()
    except StackError as exc:
        print(f"the stack did not come up: {exc}", flush=True)
        return 1
    print(f"{time.strftime('%T')} stack up; supervising", flush=True)
    try:
        while not stop.wait(TICK):
            supervisor.step()
            sys.stdout.flush()
    finally:  # a bug here must not leave the stack running without its owner
        supervisor.down()
    print(f"{time.strftime('%T')} stack down: {', '.join(supervisor.stopped)}", flush=True)
    return 0


# --- what the CLI and the demo call --------------------------------------------------------


def read(root: Path) -> dict[str, Any] | None:
    """The supervisor's last written state, or None if none was."""
    try:
        return dict(json.loads((root / STATE).read_text()))
    except (OSError, ValueError):
        return None


def running(root: Path) -> int | None:
    """The pid of the supervisor of `root` if it runs."""
    state = read(root)
    if state is None or state.get("phase") == "down":
        return None
    pid = int(state["pid"])
    return pid if processes.alive(pid) else None


def launch(
    root: Path,
    *,
    remotes: list[str],
    pod_ready_delay: float = 0.5,
    within: float = 600.0,
    nats_nodes: int | None = None,
) -> StackInfo:
    """Start a supervisor for `root` and wait until it has the stack up; StackError with its
    reason (which process died, its last log lines) if it fails."""
    if running(root) is not None:
        raise StackError(f"a stack is running already in {root}; stop it first")
    logs = root / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    (root / STATE).unlink(missing_ok=True)
    command = [sys.executable, "-m", "devstack.supervisor", "--root", str(root.resolve())]
    command += ["--clusters", ",".join(remotes), "--pod-ready-delay", str(pod_ready_delay)]
    command += ["--nats-nodes", str(nats_nodes)] if nats_nodes is not None else []
    with (logs / "supervisor.log").open("ab") as out:
        child = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    record = Process("supervisor", child.pid, str(logs / "supervisor.log"))

    def settled() -> bool:
        return (read(root) or {}).get("phase") in {"up", "failed"} or child.poll() is not None

    processes.wait_for(settled, within=within, what="the supervisor to bring the stack up")
    state = read(root) or {}
    if state.get("phase") != "up":
        child.wait()
        raise StackError(state.get("error") or f"the supervisor exited:\n{processes.tail(record)}")
    return StackInfo.load(root / "stack.json")


def shutdown(root: Path, *, purge: bool = False, within: float = 120.0) -> list[str]:
    """Stop the stack of `root` (its supervisor, else what stack.json records); the names
    stopped. `purge` then wipes `root`: the clusters' state, the root CA, JetStream, logs."""
    pid = running(root)
    if pid is None:
        stopped = Stack(root, remotes=[]).down()
    else:
        os.kill(pid, signal.SIGTERM)
        processes.wait_for(
            lambda: not processes.alive(pid), within=within, what="the supervisor to stop"
        )
        stopped = list((read(root) or {}).get("stopped") or [])
    if purge:
        shutil.rmtree(root, ignore_errors=True)
    return stopped


def request(root: Path, action: str, name: str, *, within: float = 120.0) -> str:
    """Ask the supervisor of `root` to `action` (stop, start, restart) process `name`; its
    answer. StackError if no supervisor runs or it refused."""
    if running(root) is None:
        raise StackError(f"no supervised stack runs in {root}: meshtrust devstack up")
    ident = uuid.uuid4().hex
    write_atomically(
        root / CONTROL / f"{ident}.request.json", json.dumps({"action": action, "name": name})
    )
    reply = root / CONTROL / f"{ident}.reply.json"
    processes.wait_for(reply.exists, within=within, what=f"the supervisor to {action} {name}")
    answer = json.loads(reply.read_text())
    reply.unlink()
    if not answer["ok"]:
        raise StackError(answer["message"])
    return str(answer["message"])


if __name__ == "__main__":
    sys.exit(main())


def resident(root: Path) -> dict[str, int]:
    """Resident memory (VmRSS, bytes) of every running process of the stack of `root` the
    supervisor records, by name, and of the supervisor itself ("supervisor")."""
    state = read(root) or {}
    out = {}
    for entry in state.get("processes", []):
        size = processes.rss_bytes(entry["pid"]) if entry.get("state") == "running" else None
        if size is not None:
            out[entry["name"]] = size
    pid = running(root)
    if pid is not None and (size := processes.rss_bytes(pid)) is not None:
        out["supervisor"] = size
    return out
