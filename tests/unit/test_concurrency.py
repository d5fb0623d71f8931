"""`concurrently`: results in order, overlap, and the first failure raised as itself."""

from __future__ import annotations

import asyncio

import pytest

from shared.runtime.concurrency import concurrently


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
