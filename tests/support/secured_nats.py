"""A real nats-server with the shipped account model (`devstack.natsconfig`), provisioned.

Every identity authenticates with its own nkey seed (made here, at test time, in tmp_path), as
the devstack and production do. `SecuredNats.settings(user)` connects as one identity.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import nats
from nats.aio.client import Client

from devstack.natsconfig import PROVISIONER_USER, inbox_prefix, nkeys_for, render, user_names
from devstack.natsserver import NatsServer
from shared.bus import Bus, NatsSettings
from shared.bus.fleet import FleetConsumers
from shared.bus.ledger import Ledger

LEDGER_STREAM = "MESHTRUST_LEDGER"
LEDGER_SUBJECTS = ("meshtrust.ledger.>",)
ISSUED_BUCKET = "meshtrust-issued"


class SecuredNats:
    def __init__(self, server: NatsServer, credentials: Path) -> None:
        self.server = server
        self.credentials = credentials

    def settings(self, user: str, **overrides: object) -> NatsSettings:
        settings = NatsSettings(
            urls=(self.server.url,),
            nkeys_seed_file=self.credentials / f"{user}.nk",
            inbox_prefix=inbox_prefix(user),
            request_timeout=1.0,
            publish_deadline=2.0,
            provision=False,
        )
        return settings.model_copy(update=overrides)

    async def connect_raw(self, user: str) -> Client:
        """A bare nats-py connection as `user`, as an attacker would make it (no library of
        ours in between)."""
        return await raw_connection(self.settings(user))

    async def provision(self, clusters: tuple[str, ...]) -> None:
        """What `meshtrust-issuer provision` does, as the provisioner."""
        async with Bus.connect(self.settings(PROVISIONER_USER, provision=True)) as bus:
            await bus.provision()
            await ledger(bus).ensure()
            await bus.bucket(ISSUED_BUCKET, history=1)
            fleet = FleetConsumers(bus.connection)
            for cluster in clusters:
                await fleet.ensure(cluster)


async def raw_connection(settings: NatsSettings) -> Client:
    assert settings.nkeys_seed_file is not None
    return await nats.connect(
        servers=list(settings.urls),
        nkeys_seed=str(settings.nkeys_seed_file),
        inbox_prefix=settings.inbox_prefix,
        allow_reconnect=False,
        error_cb=_quiet,
    )


async def _quiet(exc: Exception) -> None:
    """Permission violations arrive here; attack tests assert on what was stored instead."""


def ledger(bus: Bus) -> Ledger:
    return Ledger(bus.connection, stream=LEDGER_STREAM, subjects=LEDGER_SUBJECTS)


@contextmanager
def secured_nats(tmp_path: Path, clusters: tuple[str, ...]) -> Iterator[SecuredNats]:
    credentials = tmp_path / "credentials"
    public = nkeys_for(credentials, user_names(clusters))
    config = tmp_path / "nats.conf"
    server = NatsServer(store_dir=tmp_path / "js", config_file=config, log_file=tmp_path / "n.log")
    config.write_text(render(clusters=clusters, nkeys=public, port=server.port))
    server.start()
    try:
        yield SecuredNats(server, credentials)
    finally:
        server.stop()
