"""A watch's HTTP stream, read as `WatchEvent`s: the part of `shared.k8s.client` that reads the
newline-delimited JSON of `?watch=true` (kube-apiserver's watch protocol) and turns its ERROR
events and broken connections into `shared.k8s.errors`. The client opens the request; the
informer (`shared.k8s.informer`) follows a watch across reconnects.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

import aiohttp

from shared.api.meta import Obj, metadata
from shared.k8s.errors import Transient, error_from_status

__all__ = ["CONNECTION_ERRORS", "WatchEvent", "WatchStream", "status_body"]

# What aiohttp raises when the path to the server fails rather than the server answering.
CONNECTION_ERRORS = (aiohttp.ClientError, OSError, TimeoutError)

CLOSE_GRACE = 1.0
"""Seconds leaving a watch waits for its connection to close (over TLS, for the server's
close_notify) before the socket is aborted."""


@dataclass(frozen=True, slots=True)
class WatchEvent:
    """One watch event: `type` is ADDED, MODIFIED, DELETED or BOOKMARK."""

    type: str
    object: Obj

    @property
    def resource_version(self) -> str | None:
        """The event object's resourceVersion (for a BOOKMARK, the only thing it carries)."""
        return metadata(self.object).resource_version


def status_body(raw: bytes) -> Mapping[str, Any] | None:
    try:
        body = json.loads(raw)
    except ValueError:
        return None
    return body if isinstance(body, Mapping) else None


class WatchStream:
    """A single watch request: an async context manager that is also an async iterator.

    Yields `WatchEvent`s until the server ends the stream (timeout, or its own restart); an
    `ERROR` event is raised as the matching error (`Gone` for 410 Expired). Leaving the `async
    with` closes the connection, whether or not the stream was read to its end.
    """

    def __init__(self, open_response: Callable[[], Awaitable[aiohttp.ClientResponse]]) -> None:
        self._open = open_response
        self._response: aiohttp.ClientResponse | None = None

    async def __aenter__(self) -> Self:
        response = await self._open()
        if not 200 <= response.status < 300:
            try:
                raw = await response.read()
            except CONNECTION_ERRORS:
                raw = b""
            finally:
                response.release()
            raise error_from_status(response.status, status_body(raw), headers=response.headers)
        self._response = response
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        response, self._response = self._response, None
        if response is None:
            return
        connection = response.connection
        transport = connection.transport if connection is not None else None
        protocol = connection.protocol if connection is not None else None
        closed = protocol.closed if protocol is not None else None
        # close, not release: the body is unfinished, the connection cannot be reused.
        response.close()
        if transport is not None and closed is not None:
            await _until_closed(transport, closed)

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> WatchEvent:
        if self._response is None:
            raise RuntimeError("iterate a WatchStream inside `async with`")
        while True:
            try:
                line = await self._response.content.readline()
            except CONNECTION_ERRORS as exc:
                raise Transient(f"watch stream broke: {exc!r}") from exc
            if not line:
                raise StopAsyncIteration
            if not line.strip():
                continue
            try:
                event = json.loads(line)
            except ValueError as exc:
                raise Transient(
                    f"watch stream sent a line that is not JSON: {line[:200]!r}"
                ) from exc
            kind = str(event.get("type") or "")
            obj = event.get("object")
            if not isinstance(obj, dict):
                raise Transient(f"watch event without an object: {line[:200]!r}")
            if kind == "ERROR":
                code = obj.get("code")
                raise error_from_status(code if isinstance(code, int) else 500, obj)
            return WatchEvent(kind, obj)


async def _until_closed(transport: asyncio.Transport, closed: asyncio.Future[None]) -> None:
    """Until a closed response's socket is closed: CLOSE_GRACE at most, then it is aborted.

    aiohttp drops a closed response's connection from its pool at once, but over TLS the socket
    is closed only once the close_notify exchange is over, in the background, and
    `ClientSession.close()` does not wait for it (aio-libs/aiohttp#1925). An event loop closed
    before then (a test's, or a process's at exit) never closes that socket: the garbage
    collector finds it later as an unclosed transport, whoever runs then.
    """
    try:
        await asyncio.wait({closed}, timeout=CLOSE_GRACE)
        if not closed.done():
            transport.abort()  # a server that does not answer close_notify
            await asyncio.wait({closed}, timeout=CLOSE_GRACE)
    except asyncio.CancelledError:
        transport.abort()
        raise
    finally:
        if closed.done() and not closed.cancelled():
            closed.exception()  # retrieved: a connection lost with an error is not news here
