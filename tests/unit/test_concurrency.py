"""`concurrently`: results in order, overlap, and the first failure raised as itself."""

from __future__ import annotations

import asyncio

import pytest

from shared.runtime.concurrency import concurrently, raise_if_cancelled


async def test_results_come_back_in_order_and_the_awaits_overlap() -> None:
    both_started = asyncio.Event()
    started: list[str] = []

    async def one(name: str) -> str:
        started.append(name)
        if len(started) == 2:
            both_started.set()
        # Each waits for the other to have started: run one after the other, this never ends.
        await asyncio.wait_for(both_started.wait(), 5)
        return name.upper()

    assert await concurrently(one("a"), one("b")) == ("A", "B")


async def test_the_first_failure_is_raised_as_itself_and_the_rest_are_cancelled() -> None:
    cancelled = asyncio.Event()

    async def slow() -> None:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    async def fail() -> None:
        raise KeyError("boom")

    with pytest.raises(KeyError, match="boom"):
        await concurrently(slow(), fail(), slow())
    assert cancelled.is_set()


async def test_a_swallowed_cancellation_is_raised_again() -> None:
    """What nats-py's wait_for does on 3.11 when the cancel meets the result: the cancellation
    is caught and a value or a timeout comes out. The loop's next check raises it again."""
    started = asyncio.Event()
    caught = asyncio.Event()

    async def loop_that_catches_a_timeout() -> None:
        while True:
            try:
                started.set()
                await asyncio.sleep(10)
            except asyncio.CancelledError:  # swallowed, as the library does
                caught.set()
            raise_if_cancelled()

    task = asyncio.create_task(loop_that_catches_a_timeout())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 5)
    assert caught.is_set()
    assert task.cancelled()


async def test_no_cancellation_asked_means_nothing_is_raised() -> None:
    raise_if_cancelled()  # nothing asked: returns
