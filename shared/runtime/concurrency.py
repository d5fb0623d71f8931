"""Independent awaits run at once, failing as one await would.

`asyncio.gather` leaves the other awaitables running when one fails, and a TaskGroup raises an
ExceptionGroup, which the callers' `except KubeError` / `except TransientError` would not catch.
`concurrently` runs its awaitables as tasks, and on the first failure cancels the rest, waits
for them, and raises that failure itself.

Used where a reconcile or a handler needs several reads that do not depend on each other: each
is a round trip, and on the issuance path they added up.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any, TypeVar, overload

A = TypeVar("A")
B = TypeVar("B")
C = TypeVar("C")


@overload
async def concurrently(a: Awaitable[A], b: Awaitable[B], /) -> tuple[A, B]: ...


@overload
async def concurrently(a: Awaitable[A], b: Awaitable[B], c: Awaitable[C], /) -> tuple[A, B, C]: ...


async def concurrently(*awaitables: Awaitable[Any]) -> tuple[Any, ...]:
    """The results in order; the first failure (cancelling the others) is raised as it is."""
    tasks = [asyncio.ensure_future(a) for a in awaitables]
    try:
        return tuple(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


def raise_if_cancelled() -> None:
    """Honour a cancellation that a library swallowed; call it in loops that catch its errors.

    nats-py waits in `asyncio.wait_for`, which on Python 3.11 can return a result, or raise
    its own timeout, when the task's cancellation and the wait's end meet in one loop turn;
    a caller that catches that timeout and loops on never sees the cancellation again, though
    the task's `cancelling()` count still says it was asked to stop. Measured here: a bus
    consumer cancelled at the end of its grace period ran on in about one run in three."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
