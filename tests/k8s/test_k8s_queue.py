"""The work queue: de-duplication, exclusive processing, delays, rate-limited requeues."""

from __future__ import annotations

import asyncio

import pytest

from shared.k8s.backoff import BackoffPolicy, ItemBackoff, RateLimiter
from shared.k8s.queue import QueueShutDown, WorkQueue


class FakeClock:
    """A clock that moves only when told to."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def make_queue(clock: FakeClock, *, base: float = 1.0, cap: float = 16.0) -> WorkQueue[str]:
    limiter = RateLimiter(
        item=ItemBackoff(
            policy=BackoffPolicy(base_seconds=base, factor=2, cap_seconds=cap, jitter=0.0),
            rand=lambda: 0.5,
        ),
        bucket=None,
    )
    return WorkQueue(rate_limiter=limiter, clock=clock)


def drain(queue: WorkQueue[str]) -> list[str]:
    out: list[str] = []
    while (key := queue.try_get()) is not None:
        out.append(key)
        queue.done(key)
    return out


def test_duplicate_keys_collapse_into_one_entry() -> None:
    queue = make_queue(FakeClock())
    for key in ["a", "b", "a", "a", "c", "b"]:
        queue.add(key)
    assert len(queue) == 3
    assert drain(queue) == ["a", "b", "c"], "first-added order is kept"


def test_a_key_being_processed_is_not_handed_out_again() -> None:
    queue = make_queue(FakeClock())
    queue.add("a")
    assert queue.try_get() == "a"
    queue.add("a")
    queue.add("a")
    assert queue.try_get() is None, "'a' is processing; a second worker must not get it"
    queue.done("a")
    assert queue.try_get() == "a", "added while processing: ready again once done, once"
    queue.done("a")
    assert queue.try_get() is None


def test_a_key_done_without_new_adds_is_not_requeued() -> None:
    queue = make_queue(FakeClock())
    queue.add("a")
    key = queue.try_get()
    assert key == "a"
    queue.done(key)
    assert queue.try_get() is None


def test_add_after_waits_for_the_clock() -> None:
    clock = FakeClock()
    queue = make_queue(clock)
    queue.add_after("a", 10)
    assert queue.try_get() is None
    assert queue.due_in("a") == pytest.approx(10)
    clock.advance(9.9)
    assert queue.try_get() is None
    clock.advance(0.1)
    assert queue.try_get() == "a"


def test_the_earliest_of_several_delays_wins() -> None:
    clock = FakeClock()
    queue = make_queue(clock)
    queue.add_after("a", 30)
    queue.add_after("a", 5)
    queue.add_after("a", 60)
    assert queue.delayed == 1
    clock.advance(5)
    assert drain(queue) == ["a"]
    clock.advance(100)
    assert drain(queue) == [], "the superseded later delays do not fire again"


def test_a_delayed_key_already_queued_is_not_duplicated() -> None:
    clock = FakeClock()
    queue = make_queue(clock)
    queue.add("a")
    queue.add_after("a", 1)
    clock.advance(1)
    assert drain(queue) == ["a"]


def test_rate_limited_requeues_back_off_exponentially_up_to_the_cap() -> None:
    clock = FakeClock()
    queue = make_queue(clock, base=1, cap=16)
    delays = [queue.add_rate_limited("a") for _ in range(7)]
    assert delays == [1, 2, 4, 8, 16, 16, 16]
    assert queue.num_requeues("a") == 7


def test_forget_resets_the_backoff() -> None:
    queue = make_queue(FakeClock(), base=1, cap=16)
    for _ in range(4):
        queue.add_rate_limited("a")
    queue.forget("a")
    assert queue.num_requeues("a") == 0
    assert queue.add_rate_limited("a") == 1


def test_a_servers_retry_after_is_a_floor_for_the_delay() -> None:
    queue = make_queue(FakeClock(), base=1, cap=16)
    assert queue.add_rate_limited("a", at_least_seconds=7) == 7
    assert queue.add_rate_limited("b", at_least_seconds=0.5) == 1


async def test_get_waits_for_a_key_that_is_added_later() -> None:
    queue: WorkQueue[str] = WorkQueue()
    getter = asyncio.ensure_future(queue.get())
    await asyncio.sleep(0)
    assert not getter.done()
    queue.add("a")
    assert await asyncio.wait_for(getter, 5) == "a"


async def test_get_wakes_up_when_a_delay_passes() -> None:
    queue: WorkQueue[str] = WorkQueue()
    queue.add_after("a", 0.05)
    assert await asyncio.wait_for(queue.get(), 5) == "a"


async def test_shutdown_wakes_every_waiting_worker() -> None:
    queue: WorkQueue[str] = WorkQueue()

    async def worker() -> str:
        try:
            await queue.get()
        except QueueShutDown:
            return "stopped"
        return "got a key"

    async with asyncio.TaskGroup() as tg:
        workers = [tg.create_task(worker()) for _ in range(3)]
        await asyncio.sleep(0)
        queue.shutdown()
    assert [w.result() for w in workers] == ["stopped"] * 3
    queue.add("late")
    assert len(queue) == 0, "a shut-down queue takes no new keys"


async def test_a_cancelled_get_takes_nothing() -> None:
    queue: WorkQueue[str] = WorkQueue()
    getter = asyncio.ensure_future(queue.get())
    await asyncio.sleep(0)
    getter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await getter
    queue.add("a")
    assert queue.try_get() == "a"


async def test_no_key_is_ever_processed_by_two_workers_at_once() -> None:
    """Eight workers, five keys, each re-added many times while it is being processed."""
    queue: WorkQueue[str] = WorkQueue()
    keys = [f"k{i}" for i in range(5)]
    active: set[str] = set()
    overlaps: list[str] = []
    processed: dict[str, int] = dict.fromkeys(keys, 0)
    adds_left = 400

    async def worker() -> None:
        nonlocal adds_left
        while True:
            try:
                key = await queue.get()
            except QueueShutDown:
                return
            try:
                if key in active:
                    overlaps.append(key)
                active.add(key)
                processed[key] += 1
                for _ in range(3):
                    await asyncio.sleep(0)  # let other workers run while "reconciling"
                    if adds_left > 0:
                        adds_left -= 1
                        queue.add(keys[adds_left % len(keys)])
                active.discard(key)
            finally:
                queue.done(key)
            if adds_left <= 0 and len(queue) == 0 and not queue.processing:
                queue.shutdown()

    for key in keys:
        queue.add(key)
    async with asyncio.timeout(30), asyncio.TaskGroup() as tg:
        for _ in range(8):
            tg.create_task(worker())
    assert overlaps == []
    assert all(count >= 1 for count in processed.values())
    assert sum(processed.values()) < 400, "re-adds of a waiting key collapsed"
