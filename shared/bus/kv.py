"""KV buckets behind our own small interface, and a level-based watch.

`Bucket` wraps a JetStream KV bucket so that services never touch nats-py: get, put, create,
compare-and-swap update, delete, keys, watch. `Bucket.watch(pattern)` yields a `Snapshot` of
every live key under the pattern first, then `Put`/`Deleted` as they happen; after a reconnect
it resubscribes and yields a fresh `Snapshot` (the watch's server-side consumer may be gone after
a server restart, and updates may have been missed). A consumer that treats every `Snapshot` as
the complete truth, deleting what is absent from it, is correct whatever was missed.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass

import nats.errors
import nats.js.errors
from nats.js.kv import KV_DEL, KV_PURGE, KeyValue

from shared.bus.connection import Connection
from shared.runtime.logging import get_logger

log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class KvEntry:
    key: str
    value: bytes
    revision: int


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Every live key matching the watch, at one moment."""

    entries: Mapping[str, KvEntry]


@dataclass(frozen=True, slots=True)
class Put:
    entry: KvEntry


@dataclass(frozen=True, slots=True)
class Deleted:
    key: str
    revision: int


KvUpdate = Snapshot | Put | Deleted


class RevisionMismatch(Exception):
    """A compare-and-swap lost: the key changed (or appeared) since the revision given."""


class Bucket:
    def __init__(self, connection: Connection, kv: KeyValue, name: str) -> None:
        self._connection = connection
        self._kv = kv
        self.name = name

    async def get(self, key: str) -> KvEntry | None:
        try:
            entry = await self._kv.get(key)
        except (nats.js.errors.KeyNotFoundError, nats.js.errors.KeyDeletedError):
            return None
        # nats-py gives an empty value as None; a deleted key raised above.
        return KvEntry(key=key, value=entry.value or b"", revision=entry.revision or 0)

    async def put(self, key: str, value: bytes) -> int:
        return await self._kv.put(key, value)

    async def create(self, key: str, value: bytes) -> int:
        """Write only if the key does not exist; `RevisionMismatch` otherwise."""
        try:
            return await self._kv.create(key, value)
        except nats.js.errors.KeyWrongLastSequenceError:
            raise RevisionMismatch(f"{self.name}/{key} exists already") from None

    async def update(self, key: str, value: bytes, *, last: int) -> int:
        """Write only if the key's revision is still `last`; `RevisionMismatch` otherwise."""
        try:
            return await self._kv.update(key, value, last=last)
        except nats.js.errors.KeyWrongLastSequenceError:
            raise RevisionMismatch(f"{self.name}/{key} changed since revision {last}") from None

    async def delete(self, key: str) -> None:
        await self._kv.delete(key)

    async def keys(self, pattern: str = ">") -> list[str]:
        snapshot = await self._snapshot(pattern)
        return sorted(snapshot.entries)

    async def _snapshot(self, pattern: str) -> Snapshot:
        watcher = await self._kv.watch(pattern)
        try:
            entries = await _initial(watcher)
        finally:
            await _stop(watcher)
        return Snapshot(entries=entries)

    async def watch(self, pattern: str, *, poll: float = 1.0) -> AsyncIterator[KvUpdate]:
        """Snapshot, then changes; a fresh Snapshot after every reconnect. Runs until closed."""
        while True:
            seen_reconnects = self._connection.reconnects
            try:
                watcher = await self._kv.watch(pattern)
            except (nats.errors.Error, nats.js.errors.Error) as exc:
                log.warning("kv watch failed, retrying", bucket=self.name, error=str(exc))
                await asyncio.sleep(poll)
                continue
            try:
                yield Snapshot(entries=await _initial(watcher))
                while self._connection.reconnects == seen_reconnects:
                    try:
                        update = await watcher.updates(timeout=poll)  # type: ignore[no-untyped-call]
                    except nats.errors.TimeoutError:
                        continue
                    if update is None:
                        continue
                    yield _to_update(update)
                log.info("resubscribing kv watch after reconnect", bucket=self.name)
            finally:
                with contextlib.suppress(nats.errors.Error):
                    await _stop(watcher)


async def _initial(watcher: KeyValue.KeyWatcher) -> dict[str, KvEntry]:
    entries: dict[str, KvEntry] = {}
    async for update in watcher:
        if update is None:
            break
        change = _to_update(update)
        if isinstance(change, Put):
            entries[change.entry.key] = change.entry
        elif isinstance(change, Deleted):
            entries.pop(change.key, None)
    return entries


def _to_update(entry: KeyValue.Entry) -> Put | Deleted:
    revision = entry.revision or 0
    if entry.operation in (KV_DEL, KV_PURGE):
        return Deleted(key=entry.key, revision=revision)
    # nats-py gives an empty value as None.
    return Put(KvEntry(key=entry.key, value=entry.value or b"", revision=revision))


async def _stop(watcher: KeyValue.KeyWatcher) -> None:
    # nats-py leaves KeyWatcher's methods unannotated.
    await watcher.stop()  # type: ignore[no-untyped-call]
