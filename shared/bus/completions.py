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
from datetime import timedelta

import nats.errors
import nats.js.errors
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)

from shared.bus.connection import Connection
from shared.bus.publishing import once_then_retry
from shared.bus.settings import NatsSettings
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
    )


class RecordFailed(Exception):
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
        self._reload: asyncio.Future[None] | None = None
        self._policy = RetryPolicy(
            attempts=0, timeout=connection.settings.publish_deadline, wait_max=1.0
        )

    async def open(self) -> None:
        """Create the record stream when missing, and read back what may come again."""
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
        """Read back the records written since the consumer's persisted ack floor was published."""
        reconnects = self._connection.reconnects
        js = self._connection.js
        settings = self._connection.settings
        config = ConsumerConfig(
            filter_subject=self._subject,
            ack_policy=AckPolicy.NONE,
            deliver_policy=DeliverPolicy.ALL,
            inactive_threshold=30.0,
        )
        try:
            floor = (await js.consumer_info(settings.stream, self._durable)).ack_floor
            floor_seq = floor.stream_seq if floor is not None else 0
        except nats.js.errors.NotFoundError:
            floor_seq = 0
        if floor_seq:
            try:
                floor_msg = await js.get_msg(settings.stream, floor_seq)
            except nats.js.errors.NotFoundError:
                floor_msg = None
            if floor_msg is not None and floor_msg.time is not None:
                config.deliver_policy = DeliverPolicy.BY_START_TIME
                config.opt_start_time = floor_msg.time - timedelta(seconds=5)
        sub = await js.pull_subscribe(self._subject, stream=RECORD_STREAM, config=config)
        loaded = 0
        try:
            remaining = (await sub.consumer_info()).num_pending or 0
            while remaining > 0:
                try:
                    msgs = await sub.fetch(min(remaining, 256), timeout=settings.request_timeout)
                except TimeoutError:
                    break
                for msg in msgs:
                    seqs = [s for s in json.loads(msg.data) if s > floor_seq]
                    self._remember(seqs)
                    loaded += len(seqs)
                remaining -= len(msgs)
        finally:
            try:
                await sub.unsubscribe()
            except nats.errors.Error as exc:
                log.debug("unsubscribe failed", error_type=type(exc).__name__)
        self._loaded_at_reconnects = reconnects
        log.info("completion records loaded", durable=self._durable, above_floor=loaded)
