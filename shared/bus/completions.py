"""Records of what a durable consumer has handled, so that an ack lost in a crash re-runs nothing.

nats-server persists a consumer's acks lazily: measured here, a SIGKILL forgets up to ~200 ms of
acks it had confirmed (and the delivery counts with them), even with `sync_interval: always`.
Stream writes, by contrast, survive the crash of the server process once acknowledged. So before
a message is acked, its stream sequence is appended to a record stream (`MESHTRUST_CONSUMED`,
subject `meshtrust.consumed.<durable>`, expiring after a TTL); deliveries whose sequence is
recorded are acked without running the handler.

Cost: records are group-committed. Whatever completes while one record write is in flight goes
into the next write, so a busy consumer writes one small message per batch rather than one per
event, and an idle one pays a single round trip. Lookups are in memory: at start, and after
every reconnect (the server may have restarted and forgotten acks), the log reads back the
records written since the consumer's persisted ack floor was published, which covers every
message that can come back.

Deliberately not here: protection against the consumer process itself dying between its
handler's end and the record; handlers stay idempotent for that.
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from datetime import datetime, timedelta

import nats.errors
import nats.js.errors
from nats.js.api import RetentionPolicy, StorageType, StreamConfig

from shared.bus.connection import BusError, Connection
from shared.bus.publishing import once_then_retry
from shared.bus.reading import read_stream
from shared.bus.settings import NatsSettings
from shared.runtime.clock import utcnow
from shared.runtime.concurrency import raise_if_cancelled
from shared.runtime.errors import TransientError
from shared.runtime.logging import get_logger
from shared.runtime.retry import RetryPolicy

log = get_logger(__name__)

RECORD_STREAM = "MESHTRUST_CONSUMED"
RECORD_SUBJECTS = "meshtrust.consumed.>"
DEFAULT_TTL = 3600.0
"""Records expire after an hour: far longer than any redelivery takes to come."""
DEFAULT_LINGER = 0.005
"""A record waits this long for others to share its write."""
_REMEMBERED = 100_000
"""Sequences kept in memory; a lost ack concerns only the last moments before a crash."""


def records_stream_config(settings: NatsSettings, *, ttl: float = DEFAULT_TTL) -> StreamConfig:
    """The record stream; `Bus.provision` creates it, so per-cluster users need not."""
    return StreamConfig(
        name=RECORD_STREAM,
        description="stream sequences each durable consumer has handled (expiring)",
        subjects=[RECORD_SUBJECTS],
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        num_replicas=settings.kv_replicas,
        max_age=ttl,
        duplicate_window=settings.duplicate_window,
        allow_direct=True,  # read back by direct get, across accounts (shared.bus.reading)
    )


class RecordFailed(BusError, TransientError):
    """The completion could not be recorded in time; the ack goes ahead regardless."""


class CompletionLog:
    def __init__(
        self, connection: Connection, *, durable: str, ttl: float, linger: float = DEFAULT_LINGER
    ) -> None:
        self._connection = connection
        self._durable = durable
        self._ttl = ttl
        self._linger = linger
        self._subject = f"meshtrust.consumed.{durable}"
        self._known: set[int] = set()
        self._order: deque[int] = deque()
        self._pending: list[tuple[int, asyncio.Future[None]]] = []
        self._wake = asyncio.Event()
        self._loaded_at_reconnects = -1
        self._api = True
        """Whether this identity may ask JetStream's API (the consumer's ack floor)."""
        self._reload: asyncio.Future[None] | None = None
        self._policy = RetryPolicy(
            attempts=0, timeout=connection.settings.publish_deadline, wait_max=1.0
        )

    async def open(self, *, provision: bool = True) -> None:
        """Create the record stream when missing (`provision`; a cluster's identity may not,
        the hub provisions it), and read back what may come again."""
        self._api = provision
        if provision:
            js = self._connection.js
            try:
                await js.stream_info(RECORD_STREAM)
            except nats.js.errors.NotFoundError:
                await js.add_stream(records_stream_config(self._connection.settings, ttl=self._ttl))
        await self._load()

    async def seen(self, seq: int) -> bool:
        """Whether `seq` was handled already (reloading first after a reconnect)."""
        if self._loaded_at_reconnects != self._connection.reconnects:
            if self._reload is None or self._reload.done():
                self._reload = asyncio.ensure_future(self._load())
            try:
                await asyncio.shield(self._reload)
            except (nats.errors.Error, TimeoutError) as exc:
                raise TransientError(
                    f"cannot read completion records ({type(exc).__name__})"
                ) from None
        return seq in self._known

    async def record(self, seq: int) -> None:
        """Durably note `seq` as handled; returns once stored. `RecordFailed` if it cannot be."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((seq, done))
        self._wake.set()
        await done

    async def run(self) -> None:
        """The group-commit writer; runs until cancelled."""
        while True:
            raise_if_cancelled()
            await self._wake.wait()
            if self._linger > 0:
                await asyncio.sleep(self._linger)
            self._wake.clear()
            while self._pending:
                batch, self._pending = self._pending, []
                await self._write(batch)

    async def _write(self, batch: list[tuple[int, asyncio.Future[None]]]) -> None:
        seqs = [seq for seq, _ in batch]
        payload = json.dumps(seqs, separators=(",", ":")).encode()
        js = self._connection.js
        timeout = self._connection.settings.request_timeout

        async def once() -> None:
            await js.publish(self._subject, payload, timeout=timeout, stream=RECORD_STREAM)

        try:
            await once_then_retry(once, self._policy)
        except (nats.errors.Error, TimeoutError) as exc:  # RETRIABLE exhausted, or refused
            failure = RecordFailed(f"{type(exc).__name__} while recording {len(seqs)} messages")
            for _, done in batch:
                if not done.done():
                    done.set_exception(failure)
            return
        self._remember(seqs)
        for _, done in batch:
            if not done.done():
                done.set_result(None)

    def _remember(self, seqs: list[int]) -> None:
        for seq in seqs:
            if seq not in self._known:
                self._known.add(seq)
                self._order.append(seq)
        while len(self._order) > _REMEMBERED:
            self._known.discard(self._order.popleft())

    async def _load(self) -> None:
        """Read back the records that may concern a message that can come again: those written
        since the consumer's persisted ack floor was published, where this identity may ask
        JetStream for that floor (the hub), else every record still kept (a cluster's identity:
        its own records of the last `ttl`)."""
        reconnects = self._connection.reconnects
        floor_seq, since = await self._floor()
        loaded = 0
        try:
            async for stored in read_stream(
                self._connection, RECORD_STREAM, subject=self._subject, start_time=since
            ):
                seqs = [s for s in parse_record(stored.data) if s > floor_seq]
                self._remember(seqs)
                loaded += len(seqs)
        except BusError as exc:
            raise TransientError(f"cannot read completion records: {exc}") from None
        self._loaded_at_reconnects = reconnects
        log.info("completion records loaded", durable=self._durable, above_floor=loaded)

    async def _floor(self) -> tuple[int, datetime]:
        """(ack floor sequence, when to read records from). JetStream's API answers only in the
        hub account: elsewhere the floor is unknown (0) and every kept record is read."""
        js = self._connection.js
        settings = self._connection.settings
        since = utcnow() - timedelta(seconds=self._ttl)
        if not self._api:
            return 0, since
        try:
            floor = (await js.consumer_info(settings.stream, self._durable)).ack_floor
            floor_seq = floor.stream_seq if floor is not None else 0
            if not floor_seq:
                return 0, since
            floor_msg = await js.get_msg(settings.stream, floor_seq)
        except (nats.errors.Error, TimeoutError) as exc:
            log.debug("no ack floor; reading every kept record", error_type=type(exc).__name__)
            return 0, since
        if floor_msg.time is None:
            return floor_seq, since
        return floor_seq, max(since, floor_msg.time - timedelta(seconds=5))


def parse_record(data: bytes) -> list[int]:
    """The stream sequences of one completion record; [] (logged) for anything else: a record
    that cannot be read must neither stop the consumer nor count as handled."""
    try:
        value = json.loads(data)
    except (ValueError, RecursionError):
        value = None
    if not isinstance(value, list) or not all(
        isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in value
    ):
        log.warning("ignoring a malformed completion record", size=len(data))
        return []
    return value
