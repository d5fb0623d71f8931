"""How full each stream is: bytes, messages and the size limit, read from JetStream.

For the issuer's metrics (`meshtrust_bus_stream_*`, docs/metrics.md): an operator is warned
before a stream reaches its limit, where JetStream starts refusing new messages (docs/bus.md,
"Limits"). One `STREAM.INFO` request per stream per read.

Deliberately not here: the gauges themselves (the service's metrics module).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import nats.errors
import nats.js.errors

from shared.bus.connection import Connection
from shared.runtime.errors import TransientError

__all__ = ["StreamSize", "stream_sizes"]


@dataclass(frozen=True, slots=True)
class StreamSize:
    stream: str
    bytes: int
    messages: int
    max_bytes: int
    """0: no limit."""


async def stream_sizes(connection: Connection, streams: Iterable[str]) -> list[StreamSize]:
    """The size of each of `streams` that exists; `TransientError` when JetStream does not
    answer."""
    sizes: list[StreamSize] = []
    for stream in streams:
        try:
            info = await connection.js.stream_info(stream)
        except nats.js.errors.NotFoundError:
            continue
        except (nats.errors.Error, TimeoutError) as exc:
            raise TransientError(
                f"cannot read the size of stream {stream}: {type(exc).__name__}"
            ) from None
        limit = info.config.max_bytes or 0
        sizes.append(
            StreamSize(
                stream=stream,
                bytes=info.state.bytes,
                messages=info.state.messages,
                max_bytes=max(0, limit),
            )
        )
    return sizes
