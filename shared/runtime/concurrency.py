"""Independent awaits run at once, failing as one await would; a count of work in flight.

`asyncio.gather` leaves the other awaitables running when one fails, and a TaskGroup raises an
ExceptionGroup, which the callers' `except KubeError` / `except TransientError` would not catch.
`concurrently` runs its awaitables as tasks, and on the first failure cancels the rest, waits
for them, and raises that failure itself.

Used where a reconcile or a handler needs several reads that do not depend on each other: each
is a round trip, and on the issuance path they added up.

`InFlight` counts work in progress so that less urgent work on the same event loop can make way
for it, for a bounded time (the issuer's status mirror yields to the CSRs being signed).

`unless_set` waits for an await or an event (a stop, a reconnect), whichever comes first: a bus
pull may then wait long for messages (few idle pulls across a fleet) without delaying a stop, or
outliving the connection its pull request was made on.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Coroutine, Iterator
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


class InFlight:
    """How much work of one kind this process is doing now, so that other work can make way.

    `held()` is entered around each piece of the work; `none_within(seconds)` waits until none
    is in progress, for at most `seconds`: a priority, never a stall. One event loop only.
    """

    def __init__(self) -> None:
        self._count = 0
        self._idle = asyncio.Event()
        self._idle.set()

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        self._count += 1
        self._idle.clear()
        try:
            yield
        finally:
            self._count -= 1
            if self._count == 0:
                self._idle.set()

    async def none_within(self, seconds: float) -> None:
        """Return once nothing is in flight, or after `seconds`, whichever is first."""
        if self._idle.is_set():
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._idle.wait()


async def pause(stop: asyncio.Event, seconds: float) -> None:
    """Sleep `seconds`, or less if `stop` is set meanwhile."""
    try:
        async with asyncio.timeout(seconds):
            await stop.wait()
    except TimeoutError:
        pass


async def wait_any(*events: asyncio.Event) -> None:
    """Wait until one of `events` is set."""
    async with asyncio.TaskGroup() as group:
        waiters = [group.create_task(e.wait()) for e in events]
        _, pending = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()


class Interrupted(Exception):
    """One of the events was set before the awaited work finished (`unless_set`)."""


async def unless_set(work: Coroutine[Any, Any, A], *events: asyncio.Event) -> A:
    """The result of `work`, or `Interrupted` once one of `events` is set first; `work` is then
    cancelled and waited for. A result `work` had already made (or made while being cancelled)
    is still returned: a fetched message is never dropped here."""
    if any(event.is_set() for event in events):
        work.close()
        raise Interrupted
    task = asyncio.ensure_future(work)
    waiters = [asyncio.ensure_future(event.wait()) for event in events]
    try:
        await asyncio.wait((task, *waiters), return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
        if not task.done():
            task.cancel()
            await asyncio.wait((task,))
    if task.cancelled():
        raise Interrupted
    return task.result()
