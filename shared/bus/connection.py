"""Connecting to NATS with the credentials the settings name.

`connect` returns a `Bus` that owns the connection; use it as an async context manager so that
the connection is drained and closed on exit. Reconnection is the client's job (forever, every
`reconnect_wait` seconds); the bus counts reconnects so that watchers can resubscribe.

Deliberately not here: any credentials in log lines. Errors reported by the server (for example
a permissions violation) are logged by `error_cb` with the server's text, which names subjects,
never secrets.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from typing import Any

import nats
from nats.aio.client import Client
from nats.js import JetStreamContext

from shared.bus.settings import NatsSettings
from shared.runtime.errors import MeshtrustError
from shared.runtime.logging import get_logger

log = get_logger(__name__)


class BusError(MeshtrustError):
    """The bus could not be reached or refused us; the message says which server and why.

    The root of the bus's errors (`shared.runtime.errors` places it in the hierarchy)."""


class Connection:
    """The NATS connection, the JetStream context, and a reconnect counter."""

    def __init__(self, nc: Client, js: JetStreamContext, settings: NatsSettings) -> None:
        self.nc = nc
        self.js = js
        self.settings = settings
        self.reconnects = 0
        self.reconnected = asyncio.Event()
        """Set (and re-armed) at every reconnect; watchers use it to resubscribe."""

    def _on_reconnect(self) -> None:
        self.reconnects += 1
        self.reconnected.set()
        self.reconnected = asyncio.Event()

    async def close(self) -> None:
        if not self.nc.is_closed:
            try:
                await self.nc.drain()
            except (nats.errors.ConnectionClosedError, nats.errors.FlushTimeoutError):
                pass
            finally:
                if not self.nc.is_closed:
                    await self.nc.close()


def _tls_context(settings: NatsSettings) -> ssl.SSLContext | None:
    if settings.tls_ca_file is None and settings.tls_cert_file is None:
        return None
    context = ssl.create_default_context(
        cafile=str(settings.tls_ca_file) if settings.tls_ca_file else None
    )
    if settings.tls_cert_file is not None:
        context.load_cert_chain(
            str(settings.tls_cert_file),
            str(settings.tls_key_file) if settings.tls_key_file else None,
        )
    return context


def connect_options(settings: NatsSettings) -> dict[str, Any]:
    """The keyword arguments for `nats.connect`, from settings (pure; unit-tested)."""
    options: dict[str, Any] = {
        "servers": list(settings.urls),
        "connect_timeout": settings.connect_timeout,
        "reconnect_time_wait": settings.reconnect_wait,
        "max_reconnect_attempts": -1,
        "allow_reconnect": True,
        "inbox_prefix": settings.inbox_prefix,
    }
    if settings.name:
        options["name"] = settings.name
    tls = _tls_context(settings)
    if tls is not None:
        options["tls"] = tls
    if settings.user is not None:
        options["user"] = settings.user
        options["password"] = settings.password.get_secret_value() if settings.password else ""
    if settings.nkeys_seed_file is not None:
        options["nkeys_seed"] = str(settings.nkeys_seed_file)
    if settings.creds_file is not None:
        options["user_credentials"] = str(settings.creds_file)
    chosen = sum(
        x is not None for x in (settings.user, settings.nkeys_seed_file, settings.creds_file)
    )
    if chosen > 1:
        raise BusError("choose one of user/password, nkeys seed file, or creds file")
    return options


async def open_connection(settings: NatsSettings) -> Connection:
    """Connect; `BusError` naming the last failure if no server answers in `connect_deadline`.

    After the first connection the client reconnects forever; the first one is bounded, so that
    a wrong URL, CA or credential fails the service with a reason instead of a silent retry loop.
    """
    holder: dict[str, Connection] = {}
    last_error: list[str] = []

    async def on_error(exc: Exception) -> None:
        last_error[:] = [f"{type(exc).__name__}: {exc}"]
        log.warning("nats error", error=str(exc), error_type=type(exc).__name__)

    async def on_disconnect() -> None:
        log.info("nats disconnected")

    async def on_reconnect() -> None:
        log.info("nats reconnected")
        if "c" in holder:
            holder["c"]._on_reconnect()

    nc = Client()
    try:
        async with asyncio.timeout(settings.connect_deadline):
            await nc.connect(
                **connect_options(settings),
                error_cb=on_error,
                disconnected_cb=on_disconnect,
                reconnected_cb=on_reconnect,
            )
    except (nats.errors.Error, OSError, TimeoutError) as exc:
        with contextlib.suppress(nats.errors.Error):
            await nc.close()
        reason = last_error[0] if last_error else f"{type(exc).__name__}: {exc}"
        raise BusError(f"cannot connect to {', '.join(settings.urls)}: {reason}") from None
    connection = Connection(nc, nc.jetstream(timeout=settings.request_timeout), settings)
    holder["c"] = connection
    return connection
