"""The local stack's NATS: one nats-server, or several joined by routes into one JetStream cluster.

`meshtrust devstack up --nats-nodes 3` (and `Stack(nats_nodes=3)` in tests) runs three servers,
each with its own store, client, monitoring and route ports, all bound by the servers themselves
(`-1`, read back from their ports files, as `devstack.natsserver` does for one). A route port
is known only once its server listens, so the nodes start one after the other, each routed to
those already up (the first, which has none yet, to `PLACEHOLDER_ROUTE`: a clustered JetStream
server refuses to start without any route). Once all are up every node's configuration is
rewritten with its own route port and routes to every other node, and reloaded (SIGHUP), so
that every node solicits every peer, and one killed and started again (tests kill the stream
leader) binds the same ports and joins them all: the others keep retrying their routes to it.

One node keeps the single server's names (`nats-server`, `nats/jetstream`, `nats/nats.conf`);
several are `nats-server-<i>`, `nats/node-<i>/`. The number of nodes is part of the kept state
(`nats/nodes`): a stack is resumed with the nodes it was made with, since its streams' replicas
live in their stores. With more than one node the services and the provisioning get
`MESHTRUST_NATS_STREAM_REPLICAS` and `MESHTRUST_NATS_KV_REPLICAS` of 3 (at most the nodes).
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from devstack.natsconfig import cluster_block
from devstack.natsserver import ANY_PORT, NatsServer
from devstack.processes import Process, StackError

CLUSTER_NAME = "meshtrust-dev"
NODES_FILE = "nodes"
MAX_REPLICAS = 3
PLACEHOLDER_ROUTE = "nats-route://127.0.0.1:1"
"""The first node's route until its peers' ports are known: nothing listens there (port 1)."""

Render = Callable[[dict[str, object] | None], str]
"""The configuration of one node, given its cluster block (None: a single server)."""


def kept_nodes(directory: Path) -> int | None:
    """The number of nodes a kept NATS state under `directory` was made with, if any."""
    try:
        return int((directory / NODES_FILE).read_text())
    except (OSError, ValueError):
        return None


def node_names(count: int) -> list[str]:
    return ["nats-server"] if count == 1 else [f"nats-server-{i}" for i in range(count)]


class NatsNodes:
    """`count` nats-server processes under `directory`, logs in `logs`."""

    def __init__(self, directory: Path, logs: Path, count: int = 1) -> None:
        if count < 1:
            raise StackError(f"--nats-nodes must be at least 1, not {count}")
        self.directory = directory
        self.count = count
        self.servers: dict[str, NatsServer] = {}
        for i, name in enumerate(node_names(count)):
            home = directory if count == 1 else directory / f"node-{i}"
            self.servers[name] = NatsServer(
                store_dir=home / "jetstream",
                config_file=home / "nats.conf",
                server_name="meshtrust-dev" if count == 1 else f"meshtrust-dev-{i}",
                log_file=logs / f"{name}.log" if count > 1 else logs / "nats.log",
            )

    @property
    def names(self) -> list[str]:
        return list(self.servers)

    @property
    def urls(self) -> str:
        """Every node's client URL, comma-separated (`MESHTRUST_NATS_URLS`)."""
        return ",".join(server.url for server in self.servers.values())

    @property
    def replicas(self) -> int:
        return min(self.count, MAX_REPLICAS)

    def env(self) -> dict[str, str]:
        """The replica settings every process of the stack gets (none for one node)."""
        if self.count == 1:
            return {}
        replicas = str(self.replicas)
        return {
            "MESHTRUST_NATS_STREAM_REPLICAS": replicas,
            "MESHTRUST_NATS_KV_REPLICAS": replicas,
        }

    def node_of(self, server_name: str) -> str:
        """The process name of the node nats-server calls `server_name` (a stream's leader)."""
        for name, server in self.servers.items():
            if server.server_name == server_name:
                return name
        raise KeyError(server_name)

    def start(self, render: Render) -> list[Process]:
        """Start every node (one after the other, each routed to those up) and wait until the
        cluster has formed: every node answers healthy with JetStream current."""
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        (self.directory / NODES_FILE).write_text(f"{self.count}\n")
        up: list[NatsServer] = []
        for server in self.servers.values():
            self._configure(server, render, up, port=ANY_PORT)
            server.start()
            up.append(server)
        if self.count > 1:
            for server in up:  # a restart binds the same route port and joins every peer
                self._configure(server, render, up, port=server.cluster_port)
                server.reload()
            self.wait_formed()
        return [self._process(name) for name in self.servers]

    def _configure(
        self, server: NatsServer, render: Render, peers: list[NatsServer], *, port: int | None
    ) -> None:
        cluster = None
        if self.count > 1:
            routes = [
                f"nats-route://{peer.host}:{peer.cluster_port}" for peer in peers if peer != server
            ] or [PLACEHOLDER_ROUTE]
            cluster = cluster_block(
                name=CLUSTER_NAME, host=server.host, port=port or ANY_PORT, routes=routes
            )
        assert server.config_file is not None
        server.config_file.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        server.config_file.touch(mode=0o600)
        server.config_file.chmod(0o600)
        config = json.loads(render(cluster))
        if cluster is not None:  # a reload reads only the file: the node's name must be in it
            config["server_name"] = server.server_name
        server.config_file.write_text(json.dumps(config, indent=2) + "\n")

    def wait_formed(self, within: float = 60.0) -> None:
        """Every node healthy (`/healthz`: JetStream current, a meta leader known)."""
        deadline = time.monotonic() + within
        for name, server in self.servers.items():
            url = f"http://{server.host}:{server.monitor_port}/healthz"
            while not _healthy(url):
                if server.returncode is not None:
                    raise StackError(f"{name} exited while the NATS cluster formed")
                if time.monotonic() > deadline:
                    raise StackError(f"the NATS cluster did not form within {within:.0f}s ({name})")
                time.sleep(0.1)

    def _process(self, name: str) -> Process:
        server = self.servers[name]
        assert server.pid is not None
        return Process(name, server.pid, str(server.log_file))

    def kill(self, name: str, *, hard: bool = True) -> None:
        """SIGKILL one node (hard), or SIGTERM it and wait."""
        if hard:
            self.servers[name].kill()
        else:
            self.servers[name].stop()

    def restart(self, name: str) -> Process:
        """Start one node again, on its ports and store, with routes to every peer."""
        try:
            self.servers[name].start()
        except (RuntimeError, TimeoutError) as exc:
            raise StackError(f"{name} did not start: {exc}") from exc
        return self._process(name)

    def returncode(self, name: str) -> int | None:
        return self.servers[name].returncode

    def stop(self) -> None:
        for server in self.servers.values():
            server.stop()


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as answer:  # noqa: S310 - our own server
            return bool(json.loads(answer.read()).get("status") == "ok")
    except (urllib.error.URLError, ConnectionError, TimeoutError, ValueError):
        return False
