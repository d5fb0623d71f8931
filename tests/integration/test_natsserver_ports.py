"""nats-server chooses its own ports (`-1`) and says which (`--ports_file_dir`): no port is
picked free here and handed over, so no other process can take it in between."""

from __future__ import annotations

from pathlib import Path

from devstack.natsserver import NatsServer
from devstack.processes import listens


def test_servers_started_together_hold_the_ports_they_report(tmp_path: Path) -> None:
    servers = [
        NatsServer(store_dir=tmp_path / f"js{i}", log_file=tmp_path / f"n{i}.log") for i in range(3)
    ]
    try:
        for server in servers:
            server.start()
        ports = {p for server in servers for p in (server.port, server.monitor_port)}
        assert len(ports) == 6, "every server has ports of its own"
        for server in servers:
            assert server.pid is not None
            assert listens(server.pid, server.port)
            assert listens(server.pid, server.monitor_port)
            assert server.url == f"nats://127.0.0.1:{server.port}"
    finally:
        for server in servers:
            server.stop()


def test_a_restarted_server_binds_the_ports_it_had(tmp_path: Path) -> None:
    server = NatsServer(store_dir=tmp_path / "js", log_file=tmp_path / "n.log")
    server.start()
    try:
        first = (server.port, server.monitor_port)
        server.kill()
        server.start()
        assert (server.port, server.monitor_port) == first
        assert server.pid is not None
        assert listens(server.pid, server.port)
    finally:
        server.stop()


def test_a_cluster_port_is_read_from_the_server_too(tmp_path: Path) -> None:
    config = tmp_path / "nats.conf"
    # JetStream in a cluster needs a route; one to a peer that never comes is enough here.
    config.write_text(
        'cluster { name: "c1", listen: "127.0.0.1:-1", routes: ["nats://127.0.0.1:9"] }\n'
    )
    server = NatsServer(store_dir=tmp_path / "js", config_file=config, log_file=tmp_path / "n.log")
    server.start()
    try:
        assert server.cluster_port is not None
        assert server.pid is not None
        assert listens(server.pid, server.cluster_port)
    finally:
        server.stop()
