"""`devstack.startup.bounded`: many processes started in order, never more than `at_once`
started and not ready, each given its own deadline. Processes are records here; whether one is
ready is the test's answer (`check`), time is a fake clock advanced by each pause."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import pytest

from devstack.processes import Process, StackError
from devstack.startup import bounded


class Fleet:
    """Fake processes: each is ready `polls` checks after its start, or never (None)."""

    def __init__(self, polls: dict[str, int | None]) -> None:
        self.polls = polls
        self.checked: dict[str, int] = {}
        self.started: list[str] = []
        self.ready: set[str] = set()
        self.most_starting = 0
        self.now = 0.0

    def starts(self) -> list[Callable[[], Process]]:
        return [partial(self.start, name) for name in self.polls]

    def start(self, name: str) -> Process:
        self.started.append(name)
        self.most_starting = max(self.most_starting, len(self.started) - len(self.ready))
        return Process(name, pid=0, log=f"/nonexistent/{name}.log")

    def check(self, process: Process) -> str:
        seen = self.checked[process.name] = self.checked.get(process.name, 0) + 1
        needed = self.polls[process.name]
        if needed is not None and seen >= needed:
            self.ready.add(process.name)
            return ""
        return "not yet"

    def pause(self, seconds: float) -> None:
        self.now += seconds


def run(fleet: Fleet, *, at_once: int, within: float = 60.0) -> list[str]:
    started = bounded(
        fleet.starts(),
        at_once=at_once,
        within=within,
        check=fleet.check,
        clock=lambda: fleet.now,
        pause=fleet.pause,
    )
    return [p.name for p in started]


def test_all_start_in_order_never_more_than_at_once_starting() -> None:
    fleet = Fleet({f"agent-c{i}": 1 + i % 4 for i in range(20)})
    assert run(fleet, at_once=3) == [f"agent-c{i}" for i in range(20)]
    assert fleet.most_starting == 3
    assert fleet.ready == set(fleet.polls)  # it returned once every one was ready


def test_one_at_a_time_waits_for_each() -> None:
    fleet = Fleet({"a": 3, "b": 2, "c": 1})
    assert run(fleet, at_once=1) == ["a", "b", "c"]
    assert fleet.most_starting == 1
    assert fleet.checked == {"a": 3, "b": 2, "c": 1}


def test_a_process_never_ready_fails_the_start_naming_it() -> None:
    fleet = Fleet({"agent-east": 1, "bouncer-east": None, "agent-west": 1})
    with pytest.raises(StackError, match=r"timed out after 5 s waiting for bouncer-east"):
        run(fleet, at_once=2, within=5.0)
    assert 5.0 < fleet.now < 6.0  # its own deadline, not more


def test_a_process_that_exits_fails_the_start() -> None:
    def check(process: Process) -> str:
        raise StackError(f"{process.name} exited")

    starts = [lambda: Process("agent-east", pid=0, log="/nonexistent")]
    with pytest.raises(StackError, match="agent-east exited"):
        list(bounded(starts, check=check, pause=lambda _: None))


def test_at_once_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        list(bounded([], at_once=0))
