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
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass

import nats.errors
import nats.js.errors
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.kv import KV_DEL, KV_PURGE, KeyValue

from shared.bus.connection import Connection
from shared.runtime.errors import TransientError
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


@contextlib.contextmanager
def _transient(bucket: str, key: str, action: str) -> Iterator[None]:
    """NATS failing under a KV call is a transient error: the caller naks and comes back."""
    try:
        yield
    except (nats.errors.Error, TimeoutError) as exc:
        raise TransientError(f"cannot {action} {bucket}/{key}: {type(exc).__name__}") from None


class Bucket:
    """A KV bucket. Errors: `RevisionMismatch` for a lost compare-and-swap, `TransientError`
    when NATS cannot be reached or answers with an error (the bus naks and retries). A write
    that raised `TransientError` may still land later (the client buffers it through a
    reconnect): its outcome is unknown, and callers look again rather than assume."""

    def __init__(self, connection: Connection, kv: KeyValue, name: str) -> None:
        self._connection = connection
        self._kv = kv
        self.name = name

    async def get(self, key: str) -> KvEntry | None:
        try:
            entry = await self._kv.get(key)
        except (nats.js.errors.KeyNotFoundError, nats.js.errors.KeyDeletedError):
            return None
        except (nats.errors.Error, TimeoutError) as exc:
            raise TransientError(f"cannot read {self.name}/{key}: {type(exc).__name__}") from None
        # nats-py gives an empty value as None; a deleted key raised above.
        return KvEntry(key=key, value=entry.value or b"", revision=entry.revision or 0)

    async def put(self, key: str, value: bytes) -> int:
        with _transient(self.name, key, "write"):
            return await self._kv.put(key, value)

    async def create(self, key: str, value: bytes) -> int:
        """Write only if the key does not exist; `RevisionMismatch` otherwise."""
        try:
            return await self._kv.create(key, value)
        except nats.js.errors.KeyWrongLastSequenceError:
            raise RevisionMismatch(f"{self.name}/{key} exists already") from None
        except (nats.errors.Error, TimeoutError) as exc:
            raise TransientError(f"cannot create {self.name}/{key}: {type(exc).__name__}") from None

    async def update(self, key: str, value: bytes, *, last: int) -> int:
        """Write only if the key's revision is still `last`; `RevisionMismatch` otherwise."""
        try:
            return await self._kv.update(key, value, last=last)
        except nats.js.errors.KeyWrongLastSequenceError:
            raise RevisionMismatch(f"{self.name}/{key} changed since revision {last}") from None
        except (nats.errors.Error, TimeoutError) as exc:
            raise TransientError(f"cannot update {self.name}/{key}: {type(exc).__name__}") from None

    async def delete(self, key: str) -> None:
        with _transient(self.name, key, "delete"):
            await self._kv.delete(key)

    async def keys(self, pattern: str = ">") -> list[str]:
        cursor = await self._open_cursor(pattern)
        try:
            entries, _ = await cursor.snapshot()
        finally:
            await cursor.close()
        return sorted(entries)

    async def _open_cursor(self, pattern: str) -> _Cursor:
        # A named ephemeral pull consumer whose filter is part of the create subject
        # ($JS.API.CONSUMER.CREATE.<stream>.<name>.<filter>), so that NATS permissions can
        # confine a per-cluster user to its own keys. nats-py's KeyWatcher creates unnamed
        # ordered consumers, whose filter no permission can see.
        js = self._connection.js
        stream = f"KV_{self.name}"
        config = ConsumerConfig(
            filter_subject=f"$KV.{self.name}.{pattern}",
            deliver_policy=DeliverPolicy.LAST_PER_SUBJECT,
            ack_policy=AckPolicy.NONE,
            inactive_threshold=60.0,
        )
        sub = await js.pull_subscribe(config.filter_subject or "", stream=stream, config=config)
        return _Cursor(
            sub, prefix=f"$KV.{self.name}.", timeout=self._connection.settings.request_timeout
        )

    async def watch(self, pattern: str, *, poll: float = 1.0) -> AsyncIterator[KvUpdate]:
        """Snapshot, then changes; a fresh Snapshot after every reconnect. Runs until closed."""
        while True:
            seen_reconnects = self._connection.reconnects
            try:
                cursor = await self._open_cursor(pattern)
            except (nats.errors.Error, TimeoutError) as exc:
                log.warning("kv watch failed, retrying", bucket=self.name, error=str(exc))
                await asyncio.sleep(poll)
                continue
            try:
                entries, _ = await cursor.snapshot()
                yield Snapshot(entries=entries)
                while self._connection.reconnects == seen_reconnects:
                    try:
                        changes = await cursor.next(poll)
                    except nats.errors.Error as exc:
                        log.warning("kv watch interrupted", bucket=self.name, error=str(exc))
                        break
                    for change in changes:
                        yield change
                log.info("resubscribing kv watch", bucket=self.name)
            finally:
                await cursor.close()


class _Cursor:
    """Reads a KV stream through an ephemeral pull consumer: the snapshot, then changes."""

    def __init__(self, sub: JetStreamContext.PullSubscription, *, prefix: str, timeout: float):
        self._sub = sub
        self._prefix = prefix
        self._timeout = timeout
        self._quiet = True
        """The last fetch found nothing: the next asks for one change (see `next`)."""

    async def snapshot(self) -> tuple[dict[str, KvEntry], int]:
        entries: dict[str, KvEntry] = {}
        remaining = (await self._sub.consumer_info()).num_pending or 0
        while remaining > 0:
            try:
                msgs = await self._sub.fetch(min(remaining, 256), timeout=self._timeout)
            except TimeoutError:
                break
            for msg in msgs:
                change = self._decode(msg)
                if isinstance(change, Put):
                    entries[change.entry.key] = change.entry
                else:
                    entries.pop(change.key, None)
                remaining = msg.metadata.num_pending
        return entries, remaining

    async def next(self, wait: float) -> list[Put | Deleted]:
        """The next changes (none within `wait`: empty). After a fetch that found nothing, one
        change is asked for, not 64: a batch fetch right after a timed-out one can hold a lone
        change until an orphaned pull request expires (`shared.bus.consuming`, `_fetch_size`;
        seen as a desired-state change reaching the agent ~250 ms late under bench/e2e.py)."""
        try:
            msgs = await self._sub.fetch(1 if self._quiet else 64, timeout=wait)
        except TimeoutError:
            self._quiet = True
            return []
        self._quiet = False
        return [self._decode(msg) for msg in msgs]

    def _decode(self, msg: Msg) -> Put | Deleted:
        key = msg.subject[len(self._prefix) :]
        revision = msg.metadata.sequence.stream
        operation = (msg.headers or {}).get("KV-Operation")
        if operation in (KV_DEL, KV_PURGE):
            return Deleted(key=key, revision=revision)
        return Put(KvEntry(key=key, value=msg.data or b"", revision=revision))

    async def close(self) -> None:
        with contextlib.suppress(nats.errors.Error):
            await self._sub.unsubscribe()
