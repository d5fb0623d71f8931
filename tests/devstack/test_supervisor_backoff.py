"""The supervisor's restart policy, against a fake stack and a fake clock: when a crashed
process is started again, and what is recorded."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any, cast

import pytest

from devstack.processes import Process, StackError
from devstack.stack import Stack, StackInfo
from devstack.supervisor import CONTROL, Backoff, Supervisor


@pytest.mark.parametrize(
    ("failures", "delay"),
    [
        pytest.param(1, 0.5, id="the first crash waits the initial delay"),
        pytest.param(2, 1.0, id="each consecutive crash doubles it"),
        pytest.param(4, 4.0, id="the fourth waits four seconds"),
        pytest.param(20, 30.0, id="never more than the cap"),
    ],
)
def test_the_backoff_doubles_up_to_its_cap(failures: int, delay: float) -> None:
    assert Backoff(initial=0.5, factor=2, cap=30).delay(failures) == delay


class FakeStack:
    """The part of `Stack` the supervisor uses; a process "crashes" when a test sets its code."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.codes: dict[str, int | None] = {"issuer": None}
        self.pids = {"issuer": 100}
        self.starts: list[str] = []
        self.fail_next_start = False

    def up(self) -> StackInfo:
        return StackInfo(root=str(self.root), nats_url="", clusters={}, processes=[
            Process(n, p, "") for n, p in self.pids.items()
        ])  # fmt: skip

    def exit_code(self, name: str) -> int | None:
        return self.codes[name]

    def kill(self, name: str, sig: signal.Signals = signal.SIGKILL) -> None:
        self.codes[name] = -int(sig)

    def start(self, name: str) -> Process:
        if self.fail_next_start:
            self.fail_next_start = False
            raise StackError(f"{name} exited; its last log lines:\n    boom")
        self.starts.append(name)
        self.pids[name] += 1
        self.codes[name] = None
        return Process(name, self.pids[name], "")

    def down(self, *, purge: bool = False) -> list[str]:
        return list(self.pids)


@pytest.fixture
def world(tmp_path: Path) -> tuple[FakeStack, Supervisor, list[float]]:
    (tmp_path / CONTROL).mkdir()
    stack = FakeStack(tmp_path)
    now = [1000.0]
    supervisor = Supervisor(
        cast(Stack, stack),
        backoff=Backoff(initial=1, factor=2, cap=8, reset_after=60),
        clock=lambda: now[0],
        say=lambda _: None,
    )
    supervisor.up()
    return stack, supervisor, now


def issuer(supervisor: Supervisor) -> dict[str, Any]:
    return vars(supervisor.entries["issuer"])


def test_a_crashed_process_waits_its_backoff_then_is_started_and_counted(
    world: tuple[FakeStack, Supervisor, list[float]],
) -> None:
    stack, supervisor, now = world
    stack.codes["issuer"] = -9
    supervisor.step()
    assert issuer(supervisor)["state"] == "backoff"
    assert issuer(supervisor)["last_exit"] == "killed by signal 9"
    now[0] += 0.9
    supervisor.step()
    assert stack.starts == [], "not before its backoff"
    now[0] += 0.1
    supervisor.step()
    assert stack.starts == ["issuer"]
    assert issuer(supervisor) | {"started_at": 0} == issuer(supervisor) | {
        "state": "running", "pid": 101, "restarts": 1, "failures": 1, "started_at": 0,
    }  # fmt: skip


def test_consecutive_crashes_wait_longer_and_a_long_run_forgets_them(
    world: tuple[FakeStack, Supervisor, list[float]],
) -> None:
    stack, supervisor, now = world
    waits = []
    for ran in (1.0, 1.0, 1.0, 1.0, 120.0):
        now[0] += ran
        stack.codes["issuer"] = 1
        supervisor.step()
        waits.append(issuer(supervisor)["next_start"] - now[0])
        now[0] = issuer(supervisor)["next_start"]
        supervisor.step()
        assert issuer(supervisor)["state"] == "running"
    assert waits == [1, 2, 4, 8, 1]
    assert issuer(supervisor)["restarts"] == 5


def test_a_start_that_fails_is_a_crash_too(
    world: tuple[FakeStack, Supervisor, list[float]],
) -> None:
    stack, supervisor, now = world
    stack.codes["issuer"] = 1
    supervisor.step()
    stack.fail_next_start = True
    now[0] = issuer(supervisor)["next_start"]
    supervisor.step()
    assert issuer(supervisor)["state"] == "backoff"
    assert issuer(supervisor)["failures"] == 2
    assert issuer(supervisor)["last_exit"] == "issuer exited; its last log lines:"
    assert issuer(supervisor)["restarts"] == 0
