"""A periodic component honours a cancellation its work swallowed (`shared.controller.components`).

nats-py waits in `asyncio.wait_for`, which on Python 3.11 can swallow a cancellation that
meets the end of its wait; work that catches the bus's errors then returns as if nothing
happened. The component must still stop: seen as an agent that a crash test cancelled
running on for minutes (its report loop went on), which hung the test.
"""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from shared.controller.components import PeriodicComponent


async def test_a_cancellation_the_work_swallowed_still_stops_the_component() -> None:
    working = asyncio.Event()
    rounds = 0

    async def work() -> None:
        nonlocal rounds
        rounds += 1
        working.set()
        # as nats-py's wait_for can, when the answer and the cancellation meet:
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(10)

    task = asyncio.create_task(PeriodicComponent("p", work, interval=0.01).run(asyncio.Event()))
    await working.wait()
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=5)
    assert task in done, f"still running after the cancellation ({rounds} rounds)"
    with pytest.raises(asyncio.CancelledError):
        task.result()
    assert rounds == 1
