"""The local stack: nats-server, emulated clusters and the services, as separate OS processes.

`up()` starts, in order:

1. nats-server with JetStream (store under `.devstack/nats/`; or several servers in one
   JetStream cluster, `devstack.natscluster`), one NATS account and user per
   identity (`devstack.natsconfig`), authenticated by nkeys as in production: one seed file
   per user in `.devstack/nats/credentials/` (mode 600, directory 700; the server's
   configuration holds public keys only), then `meshtrust-issuer provision` with the
   provisioner's seed (the services themselves may not create streams);
2. one `meshtrust-kubeapi` process serving `mgmt` and every remote cluster on its own port,
   enforcing RBAC, admin kubeconfigs written to `.devstack/<cluster>.kubeconfig`, state kept in
   `.devstack/kube/`;
3. `kubectl apply` of `deploy/crds/` to every cluster, a root CA Secret in `mgmt`
   (`meshtrust-system/root-ca`, made now by `shared.pki.create_root_ca`), and the stand-in
   workloads of `deploy/examples/workloads.yaml` in every remote cluster; then, on every `up`,
   the services' ServiceAccounts and RBAC from deploy/ itself and a kubeconfig per service with
   its ServiceAccount's token (`devstack.identities`);
4. the services, each under its own ServiceAccount, through their production entry points and
   environment settings: the issuer (waited for until ready, since it makes the clusters'
   consumers), then an agent and a bouncer per remote cluster, each with its own NATS account,
   seed and inbox prefix, a few starting at once (`devstack.startup`: no starved start-ups).

Everything is recorded in `.devstack/stack.json` (NATS URL, pids, clusters and their
kubeconfigs), which `down()` reads to stop it all, services first. `down()` keeps the state: the
emulated clusters' store (`.devstack/kube/`, directory mode 700: their Secrets hold private keys,
the root CA's included), the JetStream store and the NATS users' seeds; `up()` on that state
resumes (same clusters, same root, no seeding, nothing re-issued) and `down(purge=True)` wipes
it all. Logs are in `.devstack/logs/`. Nothing here is imported by shared/ or services/.

Each service binds its health port itself (port 0) and logs which one it got, so no port is
picked here and lost to another process (`devstack.processes`). Restarting what crashes is not
here: `devstack.supervisor` runs a `Stack` and watches it.

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
from functools import partial
from pathlib import Path

from devstack import identities, processes, startup
from devstack.natscluster import NatsNodes, kept_nodes
from devstack.natsconfig import (
    HUB_USERS,
    PROVISIONER_USER,
    inbox_prefix,
    nkeys_for,
    render,
    user_names,
)
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
SEEDED = "seeded.json"
"""In the clusters' store once seeding completed: the remote clusters, in order."""


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
        nats_nodes: int | None = None,
    ) -> None:
        """`env` adds environment variables per process name (`issuer`, `agent-east`, ...) or
        per service (`agent`, `bouncer`), e.g. shorter timeouts for tests. `nats_nodes`: the
        NATS servers (`devstack.natscluster`; default: the kept state's, else 1)."""
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
        self.nats_nodes = nats_nodes
        self._nats: NatsNodes | None = None

    @property
    def nats(self) -> NatsNodes | None:
        """The NATS servers, once up (tests find a stream's leader among them)."""
        return self._nats

    @property
    def state_file(self) -> Path:
        return self.root / "stack.json"

    def kubeconfig(self, cluster: str) -> Path:
        """The cluster-admin's kubeconfig (the operator's, kubectl's, the tests')."""
        return self.root / f"{cluster}.kubeconfig"

    def service_kubeconfig(self, service: str, cluster: str) -> Path:
        """The kubeconfig `service` runs with in `cluster`: its ServiceAccount's token."""
        return self.root / f"{cluster}-{service}.kubeconfig"

    @property
    def signing_key(self) -> Path:
        """The key of this run's ServiceAccount tokens (`devstack.identities`)."""
        return self.kube_dir / "service-account.key"

    @property
    def kube_dir(self) -> Path:
        """The emulated clusters' store (one `state.json.<cluster>` each)."""
        return self.root / "kube"

    def kept_clusters(self) -> list[str] | None:
        """The remote clusters of the state a previous `down()` kept, or None if there is none."""
        return kept_clusters(self.root)

    # --- up -------------------------------------------------------------------------------

    def up(self) -> StackInfo:
        if self.state_file.exists() and any(
            processes.alive(p.pid) for p in StackInfo.load(self.state_file).processes
        ):
            raise StackError(f"a stack is running already ({self.state_file}); stop it first")
        kept = self.kept_clusters()
        if kept is not None and sorted(kept) != sorted(self.remotes):
            raise StackError(
                f"{self.root} keeps a stack of clusters {', '.join(kept)}, not "
                f"{', '.join(self.remotes)}: resume it with those, or wipe it with "
                "`meshtrust devstack down --purge`"
            )
        self.logs.mkdir(parents=True, exist_ok=True)
        started: list[Process] = []
        try:
            started += self._start_nats()
            self.info = self._begin(started)
            identities.write_signing_key(self.signing_key)
            started.append(self._start_kubeapi())
            self._save()
            if kept is None:  # a kept state has its CRDs, root CA and trust bundles already
                seed(
                    self.kubectl,
                    deploy=REPO / "deploy",
                    mgmt=MGMT,
                    remotes=self.remotes,
                    root_key=self.root_key,
                )
                # Written once seeding is complete: only such a state is resumed.
                (self.kube_dir / SEEDED).write_text(json.dumps(self.remotes) + "\n")
            self._identities()
            self._provision()
            started.append(self._start_service("issuer", None))
            self._save()
            processes.wait_ready(started[-1])
            self._save()
            services = [(s, c) for c in self.remotes for s in ("agent", "bouncer")]
            for process in startup.bounded(partial(self._start_service, *s) for s in services):
                started.append(process)  # a few at once (devstack/startup.py), each ready
                self._save()
            self._save()
        except BaseException:
            self.down()
            if kept is None:  # a half-seeded store is not a state to resume
                shutil.rmtree(self.kube_dir, ignore_errors=True)
            raise
        return self.info

    def _begin(self, started: list[Process]) -> StackInfo:
        """The stack's record, saved once NATS runs: its URLs, the clusters, the processes so
        far (a list the caller goes on appending to)."""
        assert self._nats is not None
        self.info = info = StackInfo(
            root=str(self.root),
            nats_url=self._nats.urls,
            clusters={c: {"kubeconfig": str(self.kubeconfig(c))} for c in [MGMT, *self.remotes]},
            processes=started,
        )
        self._save()
        return info

    def _save(self) -> None:
        assert self.info is not None
        self.state_file.write_text(self.info.to_json())

    @property
    def credentials(self) -> Path:
        """Where each NATS user's seed file is (`<user>.nk`)."""
        return self.root / "nats" / "credentials"

    def _start_nats(self) -> list[Process]:
        nats_dir = self.root / "nats"
        kept = kept_nodes(nats_dir)
        if kept is not None and self.nats_nodes not in (None, kept):
            raise StackError(f"{self.root} keeps {kept} NATS nodes, not {self.nats_nodes}")
        self._nats = NatsNodes(nats_dir, self.logs, self.nats_nodes or kept or 1)
        public = nkeys_for(self.credentials, user_names(self.remotes))
        return self._nats.start(
            lambda cluster: render(clusters=self.remotes, nkeys=public, port=0, cluster=cluster)
        )

    def nats_env(self, user: str) -> dict[str, str]:
        """The `MESHTRUST_NATS_*` variables that make a process `user` on this stack's NATS."""
        assert self.info is not None, "up() first"
        env = {
            "MESHTRUST_NATS_URLS": self.info.nats_url,
            "MESHTRUST_NATS_NKEYS_SEED_FILE": str(self.credentials / f"{user}.nk"),
            "MESHTRUST_NATS_NAME": user,
            **(self._nats.env() if self._nats is not None else {}),
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

    def _start_kubeapi(self, ports: Mapping[str, int] | None = None) -> Process:
        """The emulated clusters on ports they bind themselves (0), or on `ports` again (a
        restart: the services' kubeconfigs name those)."""
        kube_dir = self.kube_dir
        kube_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        kube_dir.chmod(0o700)  # the clusters' Secrets, the root CA's key among them
        ready = self.logs / "kubeapi.out"
        ready.write_text("")
        clusters = [MGMT, *self.remotes]
        command = [str(BIN / "meshtrust-kubeapi"), "--pod-ready-delay", str(self.pod_ready_delay)]
        command += ["--state", str(kube_dir / "state.json"), "--authorization-mode", "RBAC"]
        command += ["--service-account-key-file", str(self.signing_key), "--tls"]
        for cluster in clusters:
            port = (ports or {}).get(cluster, 0)
            command += ["--cluster", f"{cluster}=127.0.0.1:{port}:{self.kubeconfig(cluster)}"]
        log = self.logs / "kubeapi.log"
        with ready.open("wb") as out, log.open("ab") as err:
            offset = err.tell()
            process = subprocess.Popen(command, stdout=out, stderr=err, start_new_session=True)
        self._children["kubeapi"] = process
        processes.wait_for(
            lambda: (
                len(ready.read_text().splitlines()) >= len(clusters) or processes.exited(process)
            ),
            within=30,
            what="the emulated clusters to serve",
        )
        record = Process("kubeapi", process.pid, str(log), log_offset=offset)
        if process.poll() is not None:
            raise StackError(f"kubeapi exited; its last log lines:\n{processes.tail(record)}")
        assert self.info is not None
        for line in ready.read_text().splitlines():
            name, url = line.split()
            self.info.clusters[name]["url"] = url
        return record

    def _identities(self) -> None:
        """Every service's ServiceAccount and RBAC, applied from deploy/ (on every up: a kept
        state follows deploy/), and its kubeconfig with a token minted now."""
        for cluster in [MGMT, *self.remotes]:
            self._identities_in(cluster)

    def _identities_in(self, cluster: str) -> None:
        remote = cluster != MGMT
        files = identities.manifests(REPO / "deploy", remote=remote)
        self.kubectl(cluster, "apply", *[a for f in files for a in ("-f", str(f))])
        for service in identities.REMOTE_SERVICES if remote else identities.MGMT_SERVICES:
            path = self.service_kubeconfig(service, cluster)
            identities.issue(self.kubeconfig(cluster), service, path, cluster=cluster)

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
        env = {
            **os.environ,
            **self.nats_env(name),
            # Streams, buckets and the clusters' consumers are the hub's (docs/bus.md).
            "MESHTRUST_NATS_PROVISION": "false",
            "MESHTRUST_KUBE_KUBECONFIG": str(self.service_kubeconfig(service, cluster or MGMT)),
            "MESHTRUST_HEALTH_HOST": "127.0.0.1",
            # Bound by the service itself and logged (processes.bound_port): no port race.
            "MESHTRUST_HEALTH_PORT": "0",
            "MESHTRUST_LOG_FORMAT": "json",
        }
        if cluster is not None:
            env[f"MESHTRUST_{service.upper()}_CLUSTER"] = cluster
            env[f"MESHTRUST_{service.upper()}_INSTANCE"] = f"{name}-0"
            if service == "agent":  # where its RoleBindings are (deploy/remote/agent-*.yaml)
                env["MESHTRUST_AGENT_NAMESPACES"] = "istio-system"
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
        )
        self._launches[name] = launch
        return self._launch(launch)

    def _launch(self, launch: Launch) -> Process:
        child, process = processes.start(launch)
        self._children[launch.name] = child
        return process

    # --- one process at a time (tests: crash and restart) ---------------------------------

    def process(self, name: str) -> Process:
        assert self.info is not None, "up() first"
        for process in self.info.processes:
            if process.name == name:
                return process
        raise KeyError(name)

    def kill(self, name: str, sig: signal.Signals = signal.SIGKILL) -> None:
        """Send `sig` (default SIGKILL: no goodbye) to one process and wait until it is gone."""
        if self._nats is not None and name in self._nats.names:
            self._nats.kill(name, hard=sig == signal.SIGKILL)
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
        """Start one process again as `up()` did: nats-server on the same port and store, the
        emulated clusters on the same ports and state (the kubeconfigs name them)."""
        assert self.info is not None, "up() first"
        if self._nats is not None and name in self._nats.names:
            fresh = self._nats.restart(name)
        elif name == "kubeapi":
            child = self._children.pop("kubeapi", None)
            if child is not None:
                child.wait()
            ports = {c: int(v["url"].rsplit(":", 1)[1]) for c, v in self.info.clusters.items()}
            fresh = self._start_kubeapi(ports)
        else:
            fresh = self._launch(self._launches[name])
        self.info.processes = [fresh if p.name == name else p for p in self.info.processes]
        self._save()
        if wait_ready and name in self._launches:
            processes.wait_ready(fresh)
            self._save()
        return fresh

    def exit_code(self, name: str) -> int | None:
        """The exit code of one of this stack's processes once it has exited, else None."""
        if self._nats is not None and name in self._nats.names:
            return self._nats.returncode(name)
        child = self._children.get(name)
        return child.poll() if child is not None else None

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

    def down(self, *, timeout: float = 15.0, purge: bool = False) -> list[str]:
        """Stop what stack.json names, services first; returns the names stopped. The state
        stays for the next `up()` (the module's docstring) unless `purge`."""
        if not self.state_file.exists():
            if purge:
                shutil.rmtree(self.root, ignore_errors=True)
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
        self.state_file.unlink()
        if purge:
            shutil.rmtree(self.root, ignore_errors=True)
        return stopped


def kept_clusters(root: Path) -> list[str] | None:
    """The remote clusters whose seeded state `root` keeps, or None if it keeps none."""
    seeded = root / "kube" / SEEDED
    if not seeded.exists():
        return None
    return [check_cluster_name(c) for c in json.loads(seeded.read_text())]


def status(root: Path) -> dict[str, bool]:
    """Which processes of a recorded stack are alive."""
    path = root / "stack.json"
    if not path.exists():
        return {}
    return {p.name: processes.alive(p.pid) for p in StackInfo.load(path).processes}
