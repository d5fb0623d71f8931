"""Waiting for a condition with a deadline: the only synchronisation tests use."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


async def eventually(
    check: Callable[[], Awaitable[T] | T],
    *,
    within: float = 10.0,
    interval: float = 0.02,
    message: str = "condition not met",
) -> T:
    """Poll `check` until it returns something truthy; AssertionError after `within` seconds."""
    deadline = time.monotonic() + within
    last: T | None = None
    while True:
        result = check()
        if asyncio.iscoroutine(result) or isinstance(result, Awaitable):
            result = await result  # type: ignore[misc]
        last = result  # type: ignore[assignment]
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"{message} within {within}s (last: {last!r})")
        await asyncio.sleep(interval)
