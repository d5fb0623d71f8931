"""Reading a stream back, from a sequence on: the audit trail (`meshtrust audit`) and tests.

Reads through an ephemeral, unacknowledged pull consumer, in stream order. Without `follow` it
stops at the end of what was stored when the read began; with `follow` it goes on with new
messages until the caller stops iterating. Nothing is decoded here: `StoredMessage.data` is the
bytes as published (the caller decodes with `shared.events.decode` and handles refusals).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime

import nats.errors
import nats.js.errors
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from shared.bus.connection import BusError, Connection


class StreamNotFound(BusError):
    """The stream to read does not exist."""


@dataclass(frozen=True, slots=True)
class StoredMessage:
    sequence: int
    subject: str
    time: datetime
    data: bytes


async def read_stream(
    connection: Connection,
    stream: str,
    *,
    subject: str,
    start: int = 1,
    follow: bool = False,
    batch: int = 256,
    poll: float = 1.0,
) -> AsyncIterator[StoredMessage]:
    """Messages of `stream` matching `subject`, from sequence `start` on, in order."""
    config = ConsumerConfig(
        ack_policy=AckPolicy.NONE,
        deliver_policy=DeliverPolicy.BY_START_SEQUENCE if start > 1 else DeliverPolicy.ALL,
        opt_start_seq=start if start > 1 else None,
        inactive_threshold=60.0,
    )
    try:
        sub = await connection.js.pull_subscribe(subject, stream=stream, config=config)
    except nats.js.errors.NotFoundError:
        raise StreamNotFound(f"stream {stream} does not exist") from None
    try:
        remaining = (await sub.consumer_info()).num_pending or 0
        while follow or remaining > 0:
            wait = poll if follow and remaining <= 0 else connection.settings.request_timeout
            try:
                msgs = await sub.fetch(
                    max(1, min(remaining, batch)) if remaining > 0 else batch, timeout=wait
                )
            except TimeoutError:
                if follow:
                    continue
                break
            for msg in msgs:
                meta = msg.metadata
                yield StoredMessage(
                    sequence=meta.sequence.stream,
                    subject=msg.subject,
                    time=meta.timestamp,
                    data=msg.data,
                )
            remaining -= len(msgs)
    finally:
        with contextlib.suppress(nats.errors.Error):
            await sub.unsubscribe()
