"""Connecting with each kind of credential the settings offer, against a real nats-server.

TLS (server verified against a CA file), mutual TLS (client certificate), and nkeys (a seed
file). User/password is covered by test_nats_permissions.py. All key material is made here, at
test time, in tmp_path.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import nkeys
import pytest
import trustme

from devstack.natsserver import NatsServer
from shared.bus import Bus, BusError, NatsSettings
from support.events import sample_events


def start_server(tmp_path: Path, config: dict[str, object]) -> NatsServer:
    path = tmp_path / "nats.conf"
    path.write_text(json.dumps(config))
    server = NatsServer(store_dir=tmp_path / "js", config_file=path, log_file=tmp_path / "n.log")
    server.start()
    return server


@pytest.fixture
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def tls_server(tmp_path: Path, ca: trustme.CA) -> Iterator[NatsServer]:
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "server.pem"))
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    server = start_server(
        tmp_path,
        {
            "tls": {
                "cert_file": str(tmp_path / "server.pem"),
                "key_file": str(tmp_path / "server.pem"),
                "ca_file": str(tmp_path / "ca.pem"),
                "verify": True,
            }
        },
    )
    try:
        yield server
    finally:
        server.stop()


async def test_mutual_tls_connects_with_a_client_certificate(
    tls_server: NatsServer, tmp_path: Path, ca: trustme.CA
) -> None:
    client = ca.issue_cert("agent-east")
    client.cert_chain_pems[0].write_to_path(str(tmp_path / "client.crt"))
    client.private_key_pem.write_to_path(str(tmp_path / "client.key"))
    settings = NatsSettings(
        urls=(f"tls://127.0.0.1:{tls_server.port}",),
        tls_ca_file=tmp_path / "ca.pem",
        tls_cert_file=tmp_path / "client.crt",
        tls_key_file=tmp_path / "client.key",
    )
    async with Bus.connect(settings) as bus:
        await bus.provision()
        published = await bus.publish(sample_events("east")[0])
    assert published.sequence == 1


async def test_tls_without_the_client_certificate_is_refused_clearly(
    tls_server: NatsServer, tmp_path: Path
) -> None:
    settings = NatsSettings(
        urls=(f"tls://127.0.0.1:{tls_server.port}",),
        tls_ca_file=tmp_path / "ca.pem",
        connect_timeout=1.0,
        connect_deadline=3.0,
    )
    with pytest.raises(BusError, match="cannot connect"):
        async with Bus.connect(settings):
            pass


async def test_tls_against_a_server_of_another_ca_is_refused(
    tls_server: NatsServer, tmp_path: Path
) -> None:
    trustme.CA().cert_pem.write_to_path(str(tmp_path / "other-ca.pem"))
    settings = NatsSettings(
        urls=(f"tls://127.0.0.1:{tls_server.port}",),
        tls_ca_file=tmp_path / "other-ca.pem",
        connect_timeout=1.0,
        connect_deadline=3.0,
    )
    with pytest.raises(BusError, match="cannot connect"):
        async with Bus.connect(settings):
            pass


async def test_an_nkeys_seed_file_authenticates(tmp_path: Path) -> None:
    seed = nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER)
    public = nkeys.from_seed(bytearray(seed)).public_key.decode()
    seed_file = tmp_path / "agent-east.nk"
    seed_file.write_bytes(seed)
    seed_file.chmod(0o600)
    server = start_server(tmp_path, {"authorization": {"users": [{"nkey": public}]}})
    try:
        async with Bus.connect(NatsSettings(urls=(server.url,), nkeys_seed_file=seed_file)) as bus:
            await bus.provision()
            assert (await bus.publish(sample_events("east")[0])).sequence == 1
        anonymous = NatsSettings(urls=(server.url,), connect_timeout=1.0, connect_deadline=3.0)
        with pytest.raises(BusError, match="cannot connect"):
            async with Bus.connect(anonymous):
                pass
    finally:
        server.stop()
