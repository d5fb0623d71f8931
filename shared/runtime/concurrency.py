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
