"""KeyedLocks: one holder per key at a time, keys independent, nothing kept once released."""

from __future__ import annotations

import asyncio

from shared.runtime.locks import KeyedLocks


async def test_holders_of_one_key_take_turns_and_other_keys_run_meanwhile() -> None:
    locks: KeyedLocks[str] = KeyedLocks()
    inside: dict[str, int] = {"a": 0, "b": 0}
    peak: dict[str, int] = {"a": 0, "b": 0}
    both_keys_at_once = asyncio.Event()

    async def work(key: str) -> None:
        async with locks.hold(key):
            inside[key] += 1
            peak[key] = max(peak[key], inside[key])
            if inside["a"] and inside["b"]:
                both_keys_at_once.set()
            await asyncio.sleep(0.01)  # the work itself, not synchronisation
            inside[key] -= 1

    await asyncio.gather(*(work(k) for k in "aaabbb"))
    assert peak == {"a": 1, "b": 1}
    assert both_keys_at_once.is_set()
    assert len(locks) == 0, "no lock kept for keys nobody holds"


async def test_a_failing_holder_releases_the_key() -> None:
    locks: KeyedLocks[str] = KeyedLocks()

    async def fail() -> None:
        async with locks.hold("a"):
            raise RuntimeError("boom")

    results = await asyncio.gather(fail(), fail(), return_exceptions=True)
    assert all(isinstance(r, RuntimeError) for r in results)
    assert len(locks) == 0
