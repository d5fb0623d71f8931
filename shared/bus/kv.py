"""KV buckets behind our own small interface, and a level-based watch.

`Bucket` wraps a JetStream KV bucket so that services never touch nats-py: get, put, create,
compare-and-swap update, delete, keys, watch. `Bucket.watch(pattern)` yields a `Snapshot` of
every live key under the pattern first, then `Put`/`Deleted` as they happen; after a reconnect,
or when its change feed's consumer was lost, it yields a fresh `Snapshot` (updates may have
been missed). A consumer that treats every `Snapshot` as the complete truth, deleting what is
absent from it, is correct whatever was missed.

Snapshots are read by direct get and changes through a pull consumer: for a remote cluster's
agent, the durable the hub keeps for it (`shared.bus.fleet`), since in its own NATS account it
can neither create consumers nor use JetStream's API (docs/bus.md).
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

from shared.bus.connection import BusError, Connection
from shared.bus.reading import read_stream
from shared.runtime.concurrency import Interrupted, raise_if_cancelled, unless_set
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

    @property
    def revision(self) -> int:
        return self.entry.revision


@dataclass(frozen=True, slots=True)
class Deleted:
    key: str
    revision: int


KvUpdate = Snapshot | Put | Deleted


_WRONG_LAST_SEQUENCE = (10071, 10164)
"""JetStream's error codes for a compare-and-set whose expected last revision is not the key's
(nats-py maps them for update and create, not for delete)."""


class RevisionMismatch(BusError):
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

    def __init__(
        self,
        connection: Connection,
        kv: KeyValue,
        name: str,
        *,
        feed: ConsumerConfig | None = None,
        provision: bool = True,
    ) -> None:
        self._connection = connection
        self._kv = kv
        self.name = name
        self._stream = f"KV_{name}"
        self._feed = feed
        """The durable consumer `watch` reads changes through (None: an ephemeral one)."""
        self._provision = provision
        """Whether this identity creates the feed's durable when it is missing."""

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

    async def delete(self, key: str, *, last: int | None = None) -> None:
        """Delete the key; with `last`, only if its revision is still `last` (else
        `RevisionMismatch`)."""
        try:
            await self._kv.delete(key, last=last)
        except nats.js.errors.APIError as exc:
            if exc.err_code in _WRONG_LAST_SEQUENCE:
                raise RevisionMismatch(f"{self.name}/{key} changed since revision {last}") from None
            raise TransientError(f"cannot delete {self.name}/{key}: {type(exc).__name__}") from None
        except (nats.errors.Error, TimeoutError) as exc:
            raise TransientError(f"cannot delete {self.name}/{key}: {type(exc).__name__}") from None

    async def keys(self, pattern: str = ">") -> list[str]:
        entries, _ = await self._snapshot(pattern)
        return sorted(entries)

    async def _snapshot(self, pattern: str) -> tuple[dict[str, KvEntry], int]:
        """Every live key under `pattern`, and the newest revision read, by direct get of the
        keys' kept history in order (the last write of a key wins): no consumer is made, so an
        identity that may not use JetStream's API (a cluster's, in its own account) can read
        it too. Direct gets of only the last value per key (`multi_last`) stop at 1,024 keys."""
        prefix = f"$KV.{self.name}."
        entries: dict[str, KvEntry] = {}
        as_of = 0
        try:
            async for stored in read_stream(
                self._connection, self._stream, subject=prefix + pattern, batch=_SNAPSHOT_BATCH
            ):
                key = stored.subject[len(prefix) :]
                operation = (stored.headers or {}).get("KV-Operation")
                if operation in (KV_DEL, KV_PURGE):
                    entries.pop(key, None)
                else:
                    entries[key] = KvEntry(key=key, value=stored.data, revision=stored.sequence)
                as_of = stored.sequence
        except BusError as exc:
            raise TransientError(f"cannot read {self.name}/{pattern}: {exc}") from None
        return entries, as_of

    async def watch(self, pattern: str, *, poll: float = 1.0) -> AsyncIterator[KvUpdate]:
        """Snapshot, then changes; a fresh Snapshot after every reconnect (which ends a pull's
        wait at once), and whenever the change feed was lost. Runs until closed. `poll`: how
        long one pull for changes waits, so an idle watch pulls 1 / `poll` times a second.

        The changes come through a pull consumer: the bucket's `feed` (a durable the hub keeps
        for a cluster, `shared.bus.fleet`), else an ephemeral one made here. The feed is opened
        first and the snapshot read after it, so no change falls between the two; changes the
        snapshot already holds (revision at or below it) are skipped."""
        while True:
            raise_if_cancelled()
            seen_reconnects = self._connection.reconnects
            try:
                feed = await self._open_feed(pattern)
            except (nats.errors.Error, TimeoutError, TransientError) as exc:
                log.warning("kv watch failed, retrying", bucket=self.name, error=str(exc))
                await asyncio.sleep(_RETRY)
                continue
            try:
                try:
                    entries, as_of = await self._snapshot(pattern)
                except TransientError as exc:
                    log.warning("kv snapshot failed, retrying", bucket=self.name, error=str(exc))
                    await asyncio.sleep(_RETRY)
                    continue
                yield Snapshot(entries=entries)
                while self._connection.reconnects == seen_reconnects:
                    raise_if_cancelled()
                    try:
                        changes = await unless_set(feed.next(poll), self._connection.reconnected)
                    except Interrupted:
                        break  # a reconnect: a fresh snapshot
                    except nats.errors.Error as exc:
                        log.warning("kv watch interrupted", bucket=self.name, error=str(exc))
                        break
                    for change in changes:
                        if change.revision > as_of:
                            yield change
                log.info("resubscribing kv watch", bucket=self.name)
            finally:
                await feed.close()

    async def _open_feed(self, pattern: str) -> _Feed:
        """The change feed, once its consumer answers (a durable the hub has not made yet
        answers 503: wait for it)."""
        js = self._connection.js
        prefix = f"$KV.{self.name}."
        if self._feed is None:
            config = ConsumerConfig(
                filter_subject=prefix + pattern,
                deliver_policy=DeliverPolicy.NEW,
                ack_policy=AckPolicy.NONE,
                inactive_threshold=60.0,
            )
            sub = await js.pull_subscribe(
                config.filter_subject or "", stream=self._stream, config=config
            )
        else:
            durable = self._feed.durable_name or ""
            if self._provision:
                try:
                    await js.consumer_info(self._stream, durable)
                except nats.js.errors.NotFoundError:
                    await js.add_consumer(self._stream, config=self._feed)
            sub = await js.pull_subscribe_bind(durable=durable, stream=self._stream)
        feed = _Feed(sub, prefix=prefix, timeout=self._connection.settings.request_timeout)
        try:
            await feed.check()
        except BaseException:
            await feed.close()
            raise
        return feed


_SNAPSHOT_BATCH = 1024
_RETRY = 1.0
"""Seconds before a failed open or snapshot of a watch is tried again."""


class _Feed:
    """Changes of a KV stream through a pull consumer."""

    def __init__(self, sub: JetStreamContext.PullSubscription, *, prefix: str, timeout: float):
        self._sub = sub
        self._prefix = prefix
        self._timeout = timeout
        self._quiet = True
        """The last fetch found nothing: the next asks for one change (see `next`)."""
        self._early: list[Put | Deleted] = []

    async def check(self) -> None:
        """Raise `TransientError` while no consumer answers (the hub has not made it yet)."""
        try:
            self._early = await self.next(0.05)
        except nats.js.errors.ServiceUnavailableError:
            raise TransientError("the change feed's consumer does not exist (yet)") from None

    async def next(self, wait: float) -> list[Put | Deleted]:
        """The next changes (none within `wait`: empty). After a fetch that found nothing, one
        change is asked for, not 64: a batch fetch right after a timed-out one can hold a lone
        change until an orphaned pull request expires (`shared.bus.consuming`, `_fetch_size`;
        seen as a desired-state change reaching the agent ~250 ms late under bench/e2e.py).
        `ServiceUnavailableError` (a `nats.errors.Error`): the consumer is gone."""
        if self._early:
            early, self._early = self._early, []
            return early
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
