"""What the controller runner does with each reconcile outcome (no API server needed)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from shared.api.meta import ObjectKey
from shared.k8s.backoff import BackoffPolicy
from shared.k8s.controller import (
    Controller,
    ControllerSettings,
    Done,
    ReconcileResult,
    RequeueAfter,
)
from shared.k8s.errors import Conflict, NotFound, Transient
from shared.runtime.errors import PermanentError

KEY = ObjectKey("east", "istio")


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def controller_for(
    outcome: Callable[[], ReconcileResult], clock: FakeClock | None = None
) -> Controller:
    async def reconcile(key: ObjectKey) -> ReconcileResult:
        return outcome()

    return Controller(
        name="test",
        reconcile=reconcile,
        settings=ControllerSettings(
            workers=1,
            backoff=BackoffPolicy(base_seconds=1, factor=2, cap_seconds=8, jitter=0),
        ),
        clock=clock or FakeClock(),
        rand=lambda: 0.5,
    )


def raise_(exc: Exception) -> Callable[[], ReconcileResult]:
    def outcome() -> ReconcileResult:
        raise exc

    return outcome


@pytest.mark.parametrize(
    ("outcome", "due_in", "requeues"),
    [
        pytest.param(lambda: Done(), None, 0, id="done leaves nothing queued"),
        pytest.param(lambda: RequeueAfter(3600), 3600, 0, id="requeue-after schedules the key"),
        pytest.param(raise_(Transient("500")), 1, 1, id="a transient error backs off"),
        pytest.param(
            raise_(Transient("429", code=429, retry_after=30)),
            30,
            1,
            id="a Retry-After longer than the backoff wins",
        ),
        pytest.param(raise_(Conflict("stale")), 1, 1, id="a conflict backs off like a transient"),
        pytest.param(raise_(NotFound("gone")), 1, 1, id="another API error backs off"),
        pytest.param(raise_(RuntimeError("bug")), 1, 1, id="a bug backs off and keeps the worker"),
        pytest.param(
            raise_(PermanentError("BadSpec", "bad spec")), None, 0, id="a terminal error is dropped"
        ),
    ],
)
async def test_reconcile_outcomes(
    outcome: Callable[[], ReconcileResult], due_in: float | None, requeues: int
) -> None:
    controller = controller_for(outcome)
    await controller.process(KEY)
    assert controller.queue.due_in(KEY) == due_in
    assert controller.queue.num_requeues(KEY) == requeues


async def test_repeated_failures_back_off_up_to_the_cap_and_success_resets() -> None:
    failing = True

    def outcome() -> ReconcileResult:
        if failing:
            raise Transient("503")
        return Done()

    clock = FakeClock()
    controller = controller_for(outcome, clock)
    queue = controller.queue
    delays = []
    for _ in range(6):
        await controller.process(KEY)
        delay = queue.due_in(KEY)
        assert delay is not None
        delays.append(delay)
        clock.now += delay  # let the retry come due, and take it as a worker would
        assert queue.try_get() == KEY
        queue.done(KEY)
    assert delays == [1, 2, 4, 8, 8, 8]
    failing = False
    await controller.process(KEY)
    assert queue.num_requeues(KEY) == 0, "success forgets the failures"
    assert queue.due_in(KEY) is None


async def test_graceful_stop_finishes_the_reconcile_in_flight() -> None:
    started = asyncio.Event()
    release = asyncio.Event()
    finished: list[ObjectKey] = []

    async def reconcile(key: ObjectKey) -> ReconcileResult:
        started.set()
        await release.wait()
        finished.append(key)
        return Done()

    controller = Controller(
        name="stop", reconcile=reconcile, settings=ControllerSettings(workers=2)
    )
    controller.queue.add(KEY)
    async with asyncio.timeout(10), asyncio.TaskGroup() as tg:
        runner = tg.create_task(controller.run())
        await started.wait()
        controller.stop()
        controller.queue.add(ObjectKey("east", "other"))
        release.set()
    assert runner.done()
    assert finished == [KEY], "the in-flight key finished; nothing new started after stop()"
