"""`HollowFleet`: the local stack with N hollow clusters (`devstack.hollow`).

Like `devstack.stack.Stack.up()`, in order: nats-server with one account and nkeys user per
identity (`devstack.natsconfig`, 2 N + 3 users), JetStream provisioned, the emulated clusters
under RBAC and TLS, the issuer(s) through their production entry point; then, instead of 2 N
service processes, `hollow_processes` processes (`python -m devstack.hollow`), each running the
production agents and bouncers of a share of the clusters.

Seeding N clusters with kubectl (CRDs, workloads, trust bundle, deploy/'s RBAC, two tokens:
about seven kubectl runs a cluster) would take longer than the benchmark, so one template
cluster is seeded exactly as the stack seeds a cluster, then its stored state (the emulator's
`state.json.<cluster>`) is copied to every remote cluster before they are served. Every cluster
then holds the same objects (the same ServiceAccount uids, so the template's tokens, signed with
the run's key, are valid in each: each service still authenticates to, and is authorised by,
its own cluster's endpoint), and its own serving certificate. The clusters are shared out over
`kubeapi_processes` emulator processes, mgmt in the first.
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path

import yaml

from devstack import identities, processes
from devstack.processes import Launch, Process, StackError
from devstack.seeding import seed
from devstack.stack import BIN, MGMT, REPO, Stack, StackInfo
from shared.pki import KeySpec

TEMPLATE = "hollow-template"
"""The cluster seeded with kubectl whose state every hollow cluster starts from."""
KUBEAPI_START_SECONDS = 0.05
"""Allowed per cluster (on top of 30 s) for an emulator process to serve all of its clusters."""
HOLLOW_READY_SECONDS = 0.5
"""Allowed per cluster (on top of 60 s) for a hollow process to be ready."""


def shares(items: Sequence[str], parts: int) -> list[list[str]]:
    """`items` in `parts` contiguous shares as even as can be (no empty share)."""
    parts = max(1, min(parts, len(items)))
    size = math.ceil(len(items) / parts)
    return [list(items[i : i + size]) for i in range(0, len(items), size)]


class HollowFleet(Stack):
    def __init__(
        self,
        root: Path,
        *,
        remotes: list[str],
        hollow_processes: int = 1,
        kubeapi_processes: int = 1,
        issuers: int = 1,
        bookmark_interval: float = 10.0,
        pod_ready_delay: float = 0.5,
        root_key: KeySpec | None = None,
        env: Mapping[str, Mapping[str, str]] | None = None,
        issuer_profile: Path | None = None,
    ) -> None:
        """`env` as `Stack`'s (per process name or service: `issuer`, `issuer-1`, `hollow`);
        `issuer_profile`: run the first issuer under cProfile, its profile written there when
        it stops (`devstack.hollow.profiled`: the main thread's CPU)."""
        super().__init__(
            root, remotes=remotes, pod_ready_delay=pod_ready_delay, root_key=root_key, env=env
        )
        if TEMPLATE in self.remotes:
            raise StackError(f"{TEMPLATE} is the fleet's template cluster: name it otherwise")
        self.hollow_processes = hollow_processes
        self.kubeapi_processes = kubeapi_processes
        self.issuers = issuers
        self.bookmark_interval = bookmark_interval
        self.issuer_profile = issuer_profile

    def hollow_names(self) -> list[str]:
        return [f"hollow-{i}" for i in range(len(shares(self.remotes, self.hollow_processes)))]

    def issuer_names(self) -> list[str]:
        return ["issuer", *(f"issuer-{i}" for i in range(1, self.issuers))]

    def up(self) -> StackInfo:
        if self.root.exists():
            raise StackError(f"{self.root} exists: a hollow fleet starts from nothing")
        self.logs.mkdir(parents=True)
        try:
            self.info = self._begin(
                self._start_nats()
            )  # room for the fleet's durables: `consumer_limit`
            identities.write_signing_key(self.signing_key)
            self._seed_template()
            self._serve_clusters([list(s) for s in shares(self.remotes, self.kubeapi_processes)])
            self._service_kubeconfigs()
            self._provision()
            self._start_issuers()
            self._start_hollows()
        except BaseException:
            self.down()
            raise
        return self.info

    def _seed_template(self) -> None:
        """mgmt and the template seeded and given deploy/'s identities as the stack does it;
        then that emulator is stopped and the template's state copied for every cluster."""
        assert self.info is not None
        self.info.clusters[TEMPLATE] = {"kubeconfig": str(self.kubeconfig(TEMPLATE))}
        (first,) = self._start_kubeapis([[MGMT, TEMPLATE]])
        seed(
            self.kubectl,
            deploy=REPO / "deploy",
            mgmt=MGMT,
            remotes=[TEMPLATE],
            root_key=self.root_key,
        )
        for cluster in (MGMT, TEMPLATE):
            self._identities_in(cluster)
        processes.terminate(first, timeout=30)
        self._children.pop(first.name).wait()
        self.info.processes.remove(first)
        del self.info.clusters[TEMPLATE]
        self._save()
        state = self.kube_dir / f"state.json.{TEMPLATE}"
        for cluster in self.remotes:
            shutil.copyfile(state, self.kube_dir / f"state.json.{cluster}")

    def _serve_clusters(self, remote_shares: list[list[str]]) -> None:
        remote_shares[0].insert(0, MGMT)
        self._start_kubeapis(remote_shares)

    def _start_kubeapis(self, clusters: list[list[str]]) -> list[Process]:
        """One emulator process per list of clusters, each cluster on a port it binds."""
        assert self.info is not None
        self.kube_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        started: list[tuple[Process, Path, int]] = []
        for share in clusters:
            name = (
                f"kubeapi-{len([p for p in self.info.processes if p.name.startswith('kubeapi')])}"
            )
            ready = self.logs / f"{name}.out"
            command = [
                str(BIN / "meshtrust-kubeapi"),
                "--pod-ready-delay",
                str(self.pod_ready_delay),
            ]
            command += [
                "--state",
                str(self.kube_dir / "state.json"),
                "--authorization-mode",
                "RBAC",
            ]
            command += ["--service-account-key-file", str(self.signing_key), "--tls"]
            command += ["--bookmark-interval", str(self.bookmark_interval)]
            for cluster in share:
                command += ["--cluster", f"{cluster}=127.0.0.1:0:{self.kubeconfig(cluster)}"]
            log = self.logs / f"{name}.log"
            with ready.open("wb") as out, log.open("ab") as err:
                child = subprocess.Popen(command, stdout=out, stderr=err, start_new_session=True)
            self._children[name] = child
            record = Process(name, child.pid, str(log))
            self.info.processes.append(record)
            self._save()
            started.append((record, ready, len(share)))
        for record, ready, count in started:
            self._await_kubeapi(record, ready, count)
        self._save()
        return [record for record, _, _ in started]

    def _await_kubeapi(self, record: Process, ready: Path, count: int) -> None:
        """Until `record` printed a URL for each of its `count` clusters (recorded)."""
        assert self.info is not None
        child = self._children[record.name]
        processes.wait_for(
            lambda: len(ready.read_text().splitlines()) >= count or processes.exited(child),
            within=30 + KUBEAPI_START_SECONDS * count,
            what=f"{record.name} to serve its {count} clusters",
        )
        if child.poll() is not None:
            raise StackError(f"{record.name} exited; its last log lines:\n{processes.tail(record)}")
        for line in ready.read_text().splitlines():
            cluster, url = line.split()
            self.info.clusters[cluster]["url"] = url

    def _service_kubeconfigs(self) -> None:
        """Each service's kubeconfig: its cluster's admin kubeconfig (the endpoint and CA it
        serves with now) with the token minted for that service (the template's, for the
        remote clusters: the same ServiceAccount uid)."""
        for service, source, clusters in (
            *((s, TEMPLATE, self.remotes) for s in identities.REMOTE_SERVICES),
            *((s, MGMT, [MGMT]) for s in identities.MGMT_SERVICES),
        ):
            minted = yaml.safe_load(self.service_kubeconfig(service, source).read_text())
            token = str(minted["users"][0]["user"]["token"])
            for cluster in clusters:
                path = self.service_kubeconfig(service, cluster)
                identities.write_kubeconfig(self.kubeconfig(cluster), path, token)

    def _start_issuers(self) -> None:
        assert self.info is not None
        first = self._start_service("issuer", None)
        started = [first]
        self.info.processes.append(first)
        for name in self.issuer_names()[1:]:
            base = self._launches["issuer"]
            env = {**base.env, "MESHTRUST_ISSUER_INSTANCE": f"{name}-0"}
            env.update(self._extra_env.get(name, {}))
            launch = Launch(name=name, command=base.command, env=env, log=self.logs / f"{name}.log")
            self._launches[name] = launch
            started.append(self._launch(launch))
            self.info.processes.append(started[-1])
        self._save()
        for process in started:
            processes.wait_ready(process, within=120)
        self._save()

    def _launch(self, launch: Launch) -> Process:
        if launch.name == "issuer" and self.issuer_profile is not None:
            profiled = [sys.executable, "-m", "devstack.hollow.profiled", str(self.issuer_profile)]
            launch = replace(launch, command=[*profiled, "services.issuer"])
        return super()._launch(launch)

    def _start_hollows(self) -> None:
        assert self.info is not None
        started = []
        for name, share in zip(
            self.hollow_names(), shares(self.remotes, self.hollow_processes), strict=True
        ):
            env = {
                **os.environ,
                "MESHTRUST_LOG_FORMAT": "json",
                **self._extra_env.get("hollow", {}),
            }
            command = [sys.executable, "-m", "devstack.hollow", "--root", str(self.root)]
            command += ["--clusters", ",".join(share)]
            launch = Launch(name=name, command=command, env=env, log=self.logs / f"{name}.log")
            self._launches[name] = launch
            started.append((self._launch(launch), len(share)))
            self.info.processes.append(started[-1][0])
        self._save()
        for process, count in started:
            processes.wait_ready(process, within=60 + HOLLOW_READY_SECONDS * count)
        self._save()
