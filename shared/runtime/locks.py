"""One asyncio lock per key, for work that must not run twice at once for the same thing.

`KeyedLocks.hold(key)` serialises the holders of one key and lets different keys run
concurrently. A key's lock is dropped when its last holder leaves, so the map does not grow
with every key ever seen. In-process only: across processes, use the store's own
compare-and-swap (KV `create`/`update`, Kubernetes resourceVersion).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Hashable
from contextlib import asynccontextmanager
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)


class KeyedLocks(Generic[K]):
    def __init__(self) -> None:
        self._locks: dict[K, tuple[asyncio.Lock, int]] = {}

    @asynccontextmanager
    async def hold(self, key: K) -> AsyncIterator[None]:
        lock, users = self._locks.get(key, (asyncio.Lock(), 0))
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)

    def __len__(self) -> int:
        return len(self._locks)
