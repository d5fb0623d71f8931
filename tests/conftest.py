"""Fixtures shared by every test directory: a real nats-server on a free port."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from devstack.natsserver import NatsServer
from shared.bus import Bus, NatsSettings


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    """A fresh nats-server with JetStream and a temporary file store, stopped at teardown."""
    server = NatsServer(store_dir=tmp_path / "jetstream", log_file=tmp_path / "nats.log")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def nats_settings(nats_server: NatsServer) -> NatsSettings:
    return NatsSettings(
        urls=(nats_server.url,),
        reconnect_wait=0.1,
        request_timeout=1.0,
        publish_deadline=20.0,
    )


@pytest.fixture
async def bus(nats_settings: NatsSettings) -> AsyncIterator[Bus]:
    """A connected, provisioned bus."""
    async with Bus.connect(nats_settings) as connected:
        await connected.provision()
        yield connected
