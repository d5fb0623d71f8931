"""Append-only ledgers: a JetStream stream that forbids deleting and purging messages.

A ledger is for facts that must never be rewritten (the issuer records every signature in one).
`Ledger.ensure()` creates the stream with `deny_delete` and `deny_purge` (and no rollups), so that
neither a client nor an operator with ordinary JetStream rights can remove an entry; `append`
stores one entry with a `Nats-Msg-Id` (a repeat within the duplicate window stores nothing), and
`read` yields the entries in order, from any sequence.

Payloads are opaque bytes: what an entry means is the writer's business.

Deliberately not here: retention limits (a ledger keeps everything; `max_age` is unset), and
protection against someone who may edit the stream's configuration (that is NATS account
permissions' job: give services no `$JS.API.STREAM.UPDATE` on the ledger).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime

import nats.errors
import nats.js.errors
from nats.js.api import (
    DiscardPolicy,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)

from shared.bus.connection import BusError, Connection
from shared.bus.publishing import MSG_ID, RETRIABLE, PublishError
from shared.bus.reading import StreamNotFound, read_stream
from shared.runtime.logging import get_logger
from shared.runtime.retry import RetryPolicy, retry

log = get_logger(__name__)

__all__ = ["Ledger", "LedgerEntry", "LedgerError"]


class LedgerError(BusError):
    """The ledger stream is missing, or exists without its append-only guarantees."""


class ConfigurationHidden(LedgerError):
    """The ledger's configuration is out of this identity's sight (the auditor reads streams by
    direct get only): whether it is append-only could not be checked."""


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    """One stored entry: its stream sequence, subject, server time and payload."""

    sequence: int
    subject: str
    time: datetime | None
    data: bytes


class Ledger:
    """An append-only stream `stream` capturing `subjects` (e.g. `meshtrust.ledger.>`)."""

    def __init__(
        self,
        connection: Connection,
        *,
        stream: str,
        subjects: tuple[str, ...],
        description: str = "append-only ledger",
        duplicate_window: float = 120.0,
    ) -> None:
        self._connection = connection
        self.stream = stream
        self._subjects = subjects
        self._description = description
        self._duplicate_window = duplicate_window
        settings = connection.settings
        self._policy = RetryPolicy(attempts=0, timeout=settings.publish_deadline, wait_max=2.0)

    def config(self) -> StreamConfig:
        return StreamConfig(
            name=self.stream,
            description=self._description,
            subjects=list(self._subjects),
            retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE,
            discard=DiscardPolicy.NEW,  # never drop old entries to make room
            num_replicas=self._connection.settings.stream_replicas,
            duplicate_window=self._duplicate_window,
            deny_delete=True,
            deny_purge=True,
            allow_rollup_hdrs=False,
            allow_direct=True,  # read by direct get, the auditor's only way in
        )

    async def ensure(self) -> None:
        """Create the stream when missing; refuse one that lost its append-only guarantees."""
        js = self._connection.js
        try:
            info = await js.stream_info(self.stream)
        except nats.js.errors.NotFoundError:
            try:
                await js.add_stream(self.config())
            except nats.js.errors.BadRequestError as exc:
                # Another replica created it first (with another configuration): check that one.
                log.info("ledger create raced", stream=self.stream, error=exc.description)
                info = await js.stream_info(self.stream)
            else:
                log.info("ledger stream created", stream=self.stream)
                return
        self._check(info.config)
        drift = []
        if not info.config.allow_direct:
            # A ledger made before direct gets were its readers' way in.
            info.config.allow_direct = True
            drift.append("allow_direct")
        replicas = self._connection.settings.stream_replicas
        if (info.config.num_replicas or 1) != replicas:  # e.g. moved to a NATS cluster
            info.config.num_replicas = replicas
            drift.append("num_replicas")
        if drift:  # only those change: the append-only guarantees were checked above
            await js.update_stream(info.config)
            log.info("ledger stream updated", stream=self.stream, fields=drift)

    async def check(self) -> None:
        """Raise `LedgerError` unless the stream exists and is append-only (no provisioning);
        `ConfigurationHidden` where this identity may not read stream configurations."""
        try:
            info = await self._connection.js.stream_info(self.stream)
        except nats.js.errors.NotFoundError:
            raise LedgerError(f"ledger stream {self.stream} does not exist") from None
        except (
            nats.js.errors.ServiceUnavailableError,
            nats.errors.NoRespondersError,
            nats.errors.TimeoutError,
        ) as exc:
            raise ConfigurationHidden(
                f"this NATS identity may not read {self.stream}'s configuration "
                f"({type(exc).__name__})"
            ) from None
        self._check(info.config)

    def _check(self, current: StreamConfig) -> None:
        if not (current.deny_delete and current.deny_purge) or current.allow_rollup_hdrs:
            raise LedgerError(
                f"stream {self.stream} exists but allows deleting, purging or rolling up "
                "entries; it cannot serve as a ledger (recreate it, or restore deny_delete "
                "and deny_purge)"
            )

    async def append(self, subject: str, data: bytes, *, msg_id: str) -> int:
        """Store one entry; returns its sequence (the original's, for a deduplicated repeat)."""
        js = self._connection.js
        timeout = self._connection.settings.request_timeout

        async def once() -> int:
            ack = await js.publish(
                subject, data, timeout=timeout, stream=self.stream, headers={MSG_ID: msg_id}
            )
            return int(ack.seq)

        try:
            return await retry(once, on=RETRIABLE, policy=self._policy)
        except RETRIABLE as exc:
            raise PublishError(
                f"ledger entry not stored in {self.stream} within {self._policy.timeout:.0f}s "
                f"({type(exc).__name__})"
            ) from None
        except nats.js.errors.APIError as exc:
            raise PublishError(f"JetStream refused the ledger entry: {exc.description}") from None

    async def read(
        self, *, start: int = 1, subject: str | None = None, batch: int = 256
    ) -> AsyncIterator[LedgerEntry]:
        """Every entry from sequence `start` (optionally of one subject filter), in order,
        up to the end of what was stored when the read began."""
        try:
            async for stored in read_stream(
                self._connection,
                self.stream,
                subject=subject or self._subjects[0],
                start=start,
                batch=batch,
            ):
                yield LedgerEntry(
                    sequence=stored.sequence,
                    subject=stored.subject,
                    time=stored.time,
                    data=stored.data,
                )
        except StreamNotFound:
            raise LedgerError(f"ledger stream {self.stream} does not exist") from None
