"""The local stack: nats-server, emulated clusters and the services, as separate OS processes.

`up()` starts, in order:

1. nats-server with JetStream (store under `.devstack/nats/`), one NATS account and user per
   identity (`devstack.natsconfig`), authenticated by nkeys as in production: one seed file
   per user in `.devstack/nats/credentials/` (mode 600, directory 700; the server's
   configuration holds public keys only), then `meshtrust-issuer provision` with the
   provisioner's seed (the services themselves may not create streams);
2. one `meshtrust-kubeapi` process serving `mgmt` and every remote cluster on its own port,
   kubeconfigs written to `.devstack/<cluster>.kubeconfig`, state kept in `.devstack/kube/`;
3. `kubectl apply` of `deploy/crds/` to every cluster, a root CA Secret in `mgmt`
   (`meshtrust-system/root-ca`, made now by `shared.pki.create_root_ca`), and the stand-in
   workloads of `deploy/examples/workloads.yaml` in every remote cluster;
4. the services through their production entry points and environment settings: the issuer
   (waited for until ready, since it makes the clusters' consumers), then an agent and a
   bouncer per remote cluster, each with its own NATS account, seed and inbox prefix.

Everything is recorded in `.devstack/stack.json` (NATS URL, pids, clusters and their
kubeconfigs), which `down()` reads to stop it all, services first; it also removes the emulated
clusters' store (their Secrets hold private keys). Logs are in
`.devstack/logs/`. Nothing here is imported by shared/ or services/.

This module decides what runs, in which order and with which settings. How a process is
started, waited for and stopped is in `devstack.processes`; what the clusters hold before the
services start (step 3), in `devstack.seeding`.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from devstack import processes
from devstack.natsconfig import (
    HUB_USERS,
    PROVISIONER_USER,
    inbox_prefix,
    nkeys_for,
    render,
    user_names,
)
from devstack.natsserver import NatsServer
from devstack.ports import free_port
from devstack.processes import Launch, Process, StackError
from devstack.seeding import ROOT_CA_SECRET, seed
from shared.bus import NatsSettings
from shared.events import check_cluster_name
from shared.pki import KeyAlgorithm, KeySpec

__all__ = [
    "BIN",
    "MGMT",
    "REPO",
    "ROOT_CA_SECRET",
    "Process",
    "Stack",
    "StackError",
    "StackInfo",
    "status",
]

REPO = Path(__file__).resolve().parents[1]
MGMT = "mgmt"
BIN = Path(sys.executable).parent


@dataclass
class StackInfo:
    root: str
    nats_url: str
    clusters: dict[str, dict[str, str]]
    processes: list[Process] = field(default_factory=list)

    def to_json(self) -> str:
        data = {
            "root": self.root,
            "nats_url": self.nats_url,
            "clusters": self.clusters,
            "pids": {p.name: p.pid for p in self.processes},
            "processes": [p.__dict__ for p in self.processes],
        }
        return json.dumps(data, indent=2) + "\n"

    @classmethod
    def load(cls, path: Path) -> StackInfo:
        data = json.loads(path.read_text())
        return cls(
            root=data["root"],
            nats_url=data["nats_url"],
            clusters=data["clusters"],
            processes=[Process(**p) for p in data["processes"]],
        )


class Stack:
    def __init__(
        self,
        root: Path,
        *,
        remotes: list[str],
        pod_ready_delay: float = 0.5,
        root_key: KeySpec | None = None,
        env: Mapping[str, Mapping[str, str]] | None = None,
    ) -> None:
        """`env` adds environment variables per process name (`issuer`, `agent-east`, ...) or
        per service (`agent`, `bouncer`), e.g. shorter timeouts for tests."""
        self.root = root.resolve()
        self.remotes = [check_cluster_name(c) for c in remotes]
        self.pod_ready_delay = pod_ready_delay
        self.root_key = root_key or KeySpec(algorithm=KeyAlgorithm.ECDSA, size=384)
        self.logs = self.root / "logs"
        self.info: StackInfo | None = None
        self._launches: dict[str, Launch] = {}
        # Our children, kept so that they are reaped (and no Popen is collected while running).
        self._children: dict[str, subprocess.Popen[bytes]] = {}
        self._extra_env = {k: dict(v) for k, v in (env or {}).items()}
        self._nats: NatsServer | None = None

    @property
    def state_file(self) -> Path:
        return self.root / "stack.json"

    def kubeconfig(self, cluster: str) -> Path:
        return self.root / f"{cluster}.kubeconfig"

    # --- up -------------------------------------------------------------------------------

    def up(self) -> StackInfo:
        if self.state_file.exists() and any(
            processes.alive(p.pid) for p in StackInfo.load(self.state_file).processes
        ):
            raise StackError(f"a stack is running already ({self.state_file}); stop it first")
        self.logs.mkdir(parents=True, exist_ok=True)
        started: list[Process] = []
        try:
            nats_url, nats_pid = self._start_nats()
            started.append(Process("nats-server", nats_pid, str(self.logs / "nats.log")))
            self.info = StackInfo(
                root=str(self.root),
                nats_url=nats_url,
                clusters={
                    c: {"kubeconfig": str(self.kubeconfig(c))} for c in [MGMT, *self.remotes]
                },
                processes=started,
            )
            self._save()
            started.append(self._start_kubeapi())
            self._save()
            seed(
                self.kubectl,
                deploy=REPO / "deploy",
                mgmt=MGMT,
                remotes=self.remotes,
                root_key=self.root_key,
            )
            self._provision()
            started.append(self._start_service("issuer", None))
            self._save()
            processes.wait_ready(started[-1])
            for cluster in self.remotes:
                for service in ("agent", "bouncer"):
                    started.append(self._start_service(service, cluster))
                    self._save()
            for process in started[3:]:
                processes.wait_ready(process)
        except BaseException:
            self.down()
            raise
        return self.info

    def _save(self) -> None:
        assert self.info is not None
        self.state_file.write_text(self.info.to_json())

    @property
    def credentials(self) -> Path:
        """Where each NATS user's seed file is (`<user>.nk`)."""
        return self.root / "nats" / "credentials"

    def _start_nats(self) -> tuple[str, int]:
        nats_dir = self.root / "nats"
        nats_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        public = nkeys_for(self.credentials, user_names(self.remotes))
        server = NatsServer(
            store_dir=nats_dir / "jetstream",
            config_file=nats_dir / "nats.conf",
            log_file=self.logs / "nats.log",
        )
        config = nats_dir / "nats.conf"
        config.touch(mode=0o600)
        config.chmod(0o600)
        config.write_text(render(clusters=self.remotes, nkeys=public, port=server.port))
        server.start()
        assert server.pid is not None
        self._nats = server
        return server.url, server.pid

    def nats_env(self, user: str) -> dict[str, str]:
        """The `MESHTRUST_NATS_*` variables that make a process `user` on this stack's NATS."""
        assert self.info is not None, "up() first"
        env = {
            "MESHTRUST_NATS_URLS": self.info.nats_url,
            "MESHTRUST_NATS_NKEYS_SEED_FILE": str(self.credentials / f"{user}.nk"),
            "MESHTRUST_NATS_NAME": user,
        }
        if user not in HUB_USERS:
            env["MESHTRUST_NATS_INBOX_PREFIX"] = inbox_prefix(user)
        return env

    def _provision(self) -> None:
        """JetStream's streams and buckets, made by the provisioner (the issuer may not)."""
        env = {
            **os.environ,
            **self.nats_env(PROVISIONER_USER),
            "MESHTRUST_ISSUER_CLUSTERS": ",".join(self.remotes),
            "MESHTRUST_LOG_FORMAT": "json",
            # The issuer's settings (e.g. the clusters' ack wait), not its NATS identity.
            **{
                k: v
                for k, v in self._extra_env.get("issuer", {}).items()
                if not k.startswith("MESHTRUST_NATS_")
            },
        }
        with (self.logs / "provision.log").open("ab") as out:
            result = subprocess.run(
                [str(BIN / "meshtrust-issuer"), "provision"],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                timeout=120,
                check=False,
            )
        if result.returncode != 0:
            raise StackError(f"provisioning JetStream failed: see {self.logs / 'provision.log'}")

    def _start_kubeapi(self) -> Process:
        kube_dir = self.root / "kube"
        kube_dir.mkdir(parents=True, exist_ok=True)
        ready = self.logs / "kubeapi.out"
        ready.write_text("")
        clusters = [MGMT, *self.remotes]
        command = [str(BIN / "meshtrust-kubeapi"), "--pod-ready-delay", str(self.pod_ready_delay)]
        command += ["--state", str(kube_dir / "state.json")]
        for cluster in clusters:
            command += ["--cluster", f"{cluster}=127.0.0.1:0:{self.kubeconfig(cluster)}"]
        log = self.logs / "kubeapi.log"
        with ready.open("wb") as out, log.open("ab") as err:
            process = subprocess.Popen(command, stdout=out, stderr=err, start_new_session=True)
        self._children["kubeapi"] = process
        processes.wait_for(
            lambda: (
                len(ready.read_text().splitlines()) >= len(clusters) or processes.exited(process)
            ),
            within=30,
            what="the emulated clusters to serve",
        )
        if process.poll() is not None:
            raise StackError(f"meshtrust-kubeapi exited: see {log}")
        assert self.info is not None
        for line in ready.read_text().splitlines():
            name, url = line.split()
            self.info.clusters[name]["url"] = url
        return Process("kubeapi", process.pid, str(log))

    def kubectl(self, cluster: str, *args: str, stdin: str | None = None) -> str:
        command = [str(BIN / "kubectl"), "--kubeconfig", str(self.kubeconfig(cluster)), *args]
        result = subprocess.run(
            command, input=stdin, capture_output=True, text=True, timeout=120, check=False
        )
        if result.returncode != 0:
            raise StackError(f"kubectl {' '.join(args)} on {cluster}: {result.stderr.strip()}")
        return result.stdout

    def _start_service(self, service: str, cluster: str | None) -> Process:
        name = service if cluster is None else f"{service}-{cluster}"
        port = free_port()
        env = {
            **os.environ,
            **self.nats_env(name),
            # Streams, buckets and the clusters' consumers are the hub's (docs/bus.md).
            "MESHTRUST_NATS_PROVISION": "false",
            "MESHTRUST_KUBE_KUBECONFIG": str(self.kubeconfig(cluster or MGMT)),
            "MESHTRUST_HEALTH_HOST": "127.0.0.1",
            "MESHTRUST_HEALTH_PORT": str(port),
            "MESHTRUST_LOG_FORMAT": "json",
        }
        if cluster is not None:
            env[f"MESHTRUST_{service.upper()}_CLUSTER"] = cluster
            env[f"MESHTRUST_{service.upper()}_INSTANCE"] = f"{name}-0"
        else:
            env["MESHTRUST_ISSUER_INSTANCE"] = "issuer-0"
            env["MESHTRUST_ISSUER_CLUSTERS"] = ",".join(self.remotes)
            # Only the root CA Secret's namespace may hold signing CAs (docs/issuer.md).
            env["MESHTRUST_ISSUER_SIGNING_NAMESPACES"] = ROOT_CA_SECRET[0]
        env.update(self._extra_env.get(service, {}))
        env.update(self._extra_env.get(name, {}))
        launch = Launch(
            name=name,
            command=[str(BIN / f"meshtrust-{service}")],
            env=env,
            log=self.logs / f"{name}.log",
            health=f"http://127.0.0.1:{port}/readyz",
        )
        self._launches[name] = launch
        return self._launch(launch)

    def _launch(self, launch: Launch) -> Process:
        process = processes.start(launch)
        self._children[launch.name] = process
        return Process(launch.name, process.pid, str(launch.log), health=launch.health)

    # --- one process at a time (tests: crash and restart) ---------------------------------

    def process(self, name: str) -> Process:
        assert self.info is not None, "up() first"
        for process in self.info.processes:
            if process.name == name:
                return process
        raise KeyError(name)

    def kill(self, name: str, sig: signal.Signals = signal.SIGKILL) -> None:
        """Send `sig` (default SIGKILL: no goodbye) to one process and wait until it is gone."""
        if name == "nats-server":
            assert self._nats is not None
            if sig == signal.SIGKILL:
                self._nats.kill()
            else:
                self._nats.stop()
            return
        process = self.process(name)
        if processes.alive(process.pid):
            os.kill(process.pid, sig)
            processes.wait_for(
                lambda: not processes.alive(process.pid), within=30, what=f"{name} to exit"
            )
        child = self._children.pop(name, None)
        if child is not None:
            child.wait()

    def start(self, name: str, *, wait_ready: bool = True) -> Process:
        """Start one process again as `up()` did: nats-server on the same port and store."""
        assert self.info is not None, "up() first"
        if name == "nats-server":
            assert self._nats is not None
            self._nats.start()
            assert self._nats.pid is not None
            fresh = Process(name, self._nats.pid, str(self._nats.log_file))
        else:
            fresh = self._launch(self._launches[name])
        self.info.processes = [fresh if p.name == name else p for p in self.info.processes]
        self._save()
        if wait_ready and fresh.health is not None:
            processes.wait_ready(fresh)
        return fresh

    def nats_settings(self, user: str, **overrides: object) -> NatsSettings:
        """Settings that connect as `user` (tests connect as a given identity)."""
        env = self.nats_env(user)
        settings = NatsSettings(
            urls=(env["MESHTRUST_NATS_URLS"],),
            nkeys_seed_file=Path(env["MESHTRUST_NATS_NKEYS_SEED_FILE"]),
            inbox_prefix=inbox_prefix(user),
            provision=False,
        )
        return settings.model_copy(update=overrides)

    # --- down -----------------------------------------------------------------------------

    def down(self, *, timeout: float = 15.0) -> list[str]:
        """Stop what stack.json names, services first; returns the names stopped."""
        if not self.state_file.exists():
            return []
        info = StackInfo.load(self.state_file)
        stopped = [
            process.name
            for process in reversed(info.processes)  # services, then kubeapi, then nats
            if processes.terminate(process, timeout=timeout)
        ]
        for child in self._children.values():
            child.wait()
        self._children.clear()
        if self._nats is not None:
            self._nats.stop()
        # The emulated clusters' store holds their Secrets, keys included: it does not outlive
        # the stack (logs and the JetStream store, which holds no key, stay for a look).
        shutil.rmtree(self.root / "kube", ignore_errors=True)
        self.state_file.unlink()
        return stopped


def status(root: Path) -> dict[str, bool]:
    """Which processes of a recorded stack are alive."""
    path = root / "stack.json"
    if not path.exists():
        return {}
    return {p.name: processes.alive(p.pid) for p in StackInfo.load(path).processes}
