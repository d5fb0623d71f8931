"""Reading a stream back by direct get: the audit trail, the ledger, completion records, KV.

A direct get (`$JS.API.DIRECT.GET.<stream>`, answered by the stream itself) reads stored
messages without creating anything on the server: no consumer to name, to leak, to reuse or to
delete. That is what lets a read-only identity (the auditor) and the clusters' identities read
across NATS accounts: JetStream's API answers only inside the hub account, while a stream's
direct get can be exported to another account like any service (docs/bus.md). It needs the
stream's `allow_direct` (provisioning sets it; KV buckets have it).

One request asks for a batch; the server answers with up to that many messages, one per reply,
then an end-of-batch status (`204`, with `Nats-Num-Pending`: how many more match). Without
`follow`, reading stops at the end of what was stored when the read began; with it, it polls
for new messages until the caller stops iterating. Nothing is decoded here: `data` is the bytes
as published, and the caller decides what a malformed message is.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime

import nats.errors
from nats.aio.msg import Msg

from shared.bus.connection import BusError, Connection

DIRECT_GET = "$JS.API.DIRECT.GET"
_STATUS = "Status"
_END_OF_BATCH = "204"
_NOT_FOUND = "404"


class StreamNotFound(BusError):
    """The stream to read does not exist (or this identity may not read it)."""


@dataclass(frozen=True, slots=True)
class StoredMessage:
    sequence: int
    subject: str
    time: datetime | None
    data: bytes
    headers: dict[str, str] | None = None


@dataclass(frozen=True, slots=True)
class Batch:
    """One direct-get answer: the messages, how many more match, and the stream's last
    sequence when the server answered."""

    messages: list[StoredMessage]
    pending: int
    last_sequence: int


def _stored(msg: Msg) -> StoredMessage:
    headers = dict(msg.headers or {})
    stamp = headers.get("Nats-Time-Stamp")
    return StoredMessage(
        sequence=int(headers["Nats-Sequence"]),
        subject=headers["Nats-Subject"],
        time=_parse_time(stamp) if stamp else None,
        data=msg.data or b"",
        headers={k: v for k, v in headers.items() if not k.startswith("Nats-")} or None,
    )


def _parse_time(stamp: str) -> datetime:
    # RFC 3339 with nanoseconds; Python keeps microseconds.
    head, _, rest = stamp.rstrip("Z").partition(".")
    fraction = (rest + "000000")[:6]
    return datetime.fromisoformat(f"{head}.{fraction}+00:00")


async def direct_batch(connection: Connection, stream: str, request: dict[str, object]) -> Batch:
    """One batched direct get of `stream` (`request`: seq / start_time / next_by_subj /
    multi_last / up_to_seq, and batch). `StreamNotFound` when no stream answers; `BusError`
    when the whole answer does not come within the request timeout."""
    timeout = connection.settings.request_timeout
    nc = connection.nc
    inbox = nc.new_inbox()
    sub = await nc.subscribe(inbox)
    messages: list[StoredMessage] = []
    try:
        await nc.publish(f"{DIRECT_GET}.{stream}", json.dumps(request).encode(), reply=inbox)
        async with asyncio.timeout(timeout):
            while True:
                msg = await sub.next_msg(timeout=timeout)
                status = (msg.headers or {}).get(_STATUS)
                if status is None:
                    messages.append(_stored(msg))
                    continue
                headers = msg.headers or {}
                if status == _END_OF_BATCH:
                    return Batch(
                        messages,
                        pending=int(headers.get("Nats-Num-Pending", 0)),
                        last_sequence=int(headers.get("Nats-Last-Sequence", 0)),
                    )
                if status == _NOT_FOUND:
                    return Batch(messages, pending=0, last_sequence=0)
                if status == "503":
                    raise StreamNotFound(f"no stream {stream} answers direct gets here")
                raise BusError(
                    f"direct get of {stream} refused: {status} {headers.get('Description', '')}"
                )
    except (nats.errors.TimeoutError, TimeoutError):
        raise BusError(f"direct get of {stream}: no complete answer in {timeout}s") from None
    finally:
        with contextlib.suppress(nats.errors.Error):
            await sub.unsubscribe()


async def read_stream(
    connection: Connection,
    stream: str,
    *,
    subject: str,
    start: int = 1,
    start_time: datetime | None = None,
    follow: bool = False,
    batch: int = 256,
    poll: float = 1.0,
) -> AsyncIterator[StoredMessage]:
    """Messages of `stream` matching `subject`, from sequence `start` (or from `start_time`)
    on, in order."""
    request: dict[str, object] = {"next_by_subj": subject, "batch": batch}
    if start_time is not None:
        request["start_time"] = start_time.isoformat().replace("+00:00", "Z")
    else:
        request["seq"] = max(1, start)
    while True:
        answer = await direct_batch(connection, stream, request)
        for stored in answer.messages:
            yield stored
        if answer.messages:
            request = {"next_by_subj": subject, "batch": batch}
            request["seq"] = answer.messages[-1].sequence + 1
        if answer.pending > 0:
            continue
        if not follow:
            return
        await asyncio.sleep(poll)
