"""`unless_set`: an await raced against events (a stop, a reconnect), nothing it made dropped."""

from __future__ import annotations

import asyncio

import pytest

from shared.runtime.concurrency import Interrupted, unless_set


async def test_the_result_is_returned_when_the_work_finishes_first() -> None:
    stop = asyncio.Event()

    async def work() -> str:
        await asyncio.sleep(0)
        return "messages"

    assert await unless_set(work(), stop) == "messages"
    assert not stop.is_set()


async def test_an_event_set_first_interrupts_and_cancels_the_work() -> None:
    stop, started, cancelled = asyncio.Event(), asyncio.Event(), asyncio.Event()

    async def work() -> str:
        started.set()
        try:
            await asyncio.Event().wait()  # a fetch that would wait for ever
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return "never"

    racing = asyncio.create_task(unless_set(work(), asyncio.Event(), stop))
    await started.wait()
    stop.set()
    with pytest.raises(Interrupted):
        await racing
    assert cancelled.is_set(), "the work was cancelled, and waited for, before Interrupted"


async def test_an_event_already_set_interrupts_without_starting_the_work() -> None:
    stop = asyncio.Event()
    stop.set()
    ran = []

    async def work() -> None:
        ran.append(True)

    with pytest.raises(Interrupted):
        await unless_set(work(), stop)
    assert ran == []


async def test_a_result_made_while_being_cancelled_is_not_dropped() -> None:
    """nats-py's waits can finish with a message as the cancellation lands: that message must
    reach the caller, or it would wait for its redelivery."""
    stop, started = asyncio.Event(), asyncio.Event()

    async def work() -> str:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            return "a message that arrived meanwhile"
        return "never"

    racing = asyncio.create_task(unless_set(work(), stop))
    await started.wait()
    stop.set()
    assert await racing == "a message that arrived meanwhile"


async def test_an_error_of_the_work_is_raised_as_itself() -> None:
    async def work() -> None:
        raise LookupError("no consumer")

    with pytest.raises(LookupError, match="no consumer"):
        await unless_set(work(), asyncio.Event())


async def test_cancelling_the_caller_cancels_the_work() -> None:
    started, cancelled = asyncio.Event(), asyncio.Event()

    async def work() -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    racing = asyncio.create_task(unless_set(work(), asyncio.Event()))
    await started.wait()
    racing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await racing
    assert cancelled.is_set()
