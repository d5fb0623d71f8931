"""Declaring a fleet's certificates in mgmt and seeing them FINISHED, for tests and benchmarks.

`declare` applies deploy/examples/declarations.yaml for one cluster through the API (kubectl
would cost a process per cluster); `reissue` changes every declaration's spec at once (its
`ttlDays`: a spec change re-issues, docs/agent.md). `Observer` runs an informer on each remote
cluster's IssuedCertificates and one on mgmt's, and records when each certificate (by serial
number) was first seen FINISHED in its cluster and in mgmt's mirrored status: watches, not
polls, so that following 1,000 clusters costs the stack under test little.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from devstack.demo import IC_NAME, IC_NAMESPACE, declarations
from shared.k8s.client import KubeClient
from shared.k8s.errors import AlreadyExists
from shared.k8s.informer import Handler, Informer, InformerEvent
from shared.k8s.resources import ISSUED_CERTIFICATES, NAMESPACES, POD_BOUNCE_DIRECTIVES

FINISHED = "FINISHED"
TLS_CLOSE_GRACE = 0.25
KINDS = {"Namespace": NAMESPACES, "IssuedCertificate": ISSUED_CERTIFICATES}
KINDS["PodBounceDirective"] = POD_BOUNCE_DIRECTIVES


async def declare(mgmt: KubeClient, cluster: str) -> None:
    """`cluster`'s namespace, IssuedCertificate and PodBounceDirective in mgmt (ECDSA P-256)."""
    for body in yaml.safe_load_all(declarations(cluster, key_algorithm="ECDSA", ttl=None)):
        with contextlib.suppress(AlreadyExists):
            await mgmt.create(KINDS[body["kind"]], body)


async def reissue(mgmt: KubeClient, cluster: str, *, ttl_days: int) -> None:
    """Change `cluster`'s declaration (its certificate's lifetime): a new issuance."""
    patch: dict[str, Any] = {"spec": {"certOptions": {"ttlDays": ttl_days}}}
    await mgmt.patch_merge(ISSUED_CERTIFICATES, IC_NAME, patch, namespace=cluster)


@dataclass
class Seen:
    """When (monotonic seconds) each serial number was first seen FINISHED, per cluster."""

    at: dict[str, dict[str, float]] = field(default_factory=dict)

    def record(self, cluster: str, obj: dict[str, Any]) -> None:
        status = obj.get("status") or {}
        serial = status.get("serialNumber")
        if status.get("state") == FINISHED and serial:
            self.at.setdefault(cluster, {}).setdefault(serial, time.monotonic())

    def serials(self, cluster: str) -> set[str]:
        return set(self.at.get(cluster, {}))


@dataclass
class Observer:
    """Watches `clusters`' IssuedCertificates (admin kubeconfigs) and mgmt's declarations."""

    kubeconfigs: dict[str, Path]
    mgmt: Path
    remote: Seen = field(default_factory=Seen)
    mirror: Seen = field(default_factory=Seen)

    def finished(self, clusters: Iterable[str], *, besides: dict[str, set[str]]) -> bool:
        """Whether every cluster has a FINISHED certificate other than those of `besides`."""
        return all(self.remote.serials(c) - besides.get(c, set()) for c in clusters)

    def first_new(self, cluster: str, besides: set[str]) -> tuple[str, float] | None:
        """The cluster's first FINISHED serial not in `besides`, and when it was seen."""
        fresh = [(t, s) for s, t in self.remote.at.get(cluster, {}).items() if s not in besides]
        return None if not fresh else (min(fresh)[1], min(fresh)[0])

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Observer]:
        try:
            async with self._informers() as observer:
                yield observer
        finally:
            # A TLS connection's close is a shutdown exchange that needs the loop a moment
            # longer (aiohttp's "graceful shutdown"): without it, a loop closed right after
            # leaves the watches' sockets open.
            await asyncio.sleep(TLS_CLOSE_GRACE)

    @contextlib.asynccontextmanager
    async def _informers(self) -> AsyncIterator[Observer]:
        async with contextlib.AsyncExitStack() as stack, asyncio.TaskGroup() as group:
            informers = []
            for cluster, path in [*self.kubeconfigs.items(), ("", self.mgmt)]:
                client = await stack.enter_async_context(KubeClient.from_kubeconfig(path))
                namespace = IC_NAMESPACE if cluster else None
                informer = Informer(client, ISSUED_CERTIFICATES, namespace=namespace)
                informer.add_handler(self._handler(cluster))
                informers.append(informer)
            tasks = [group.create_task(i.run()) for i in informers]
            try:
                for informer in informers:
                    await informer.wait_synced()
                yield self
            finally:
                for task in tasks:
                    task.cancel()

    def _handler(self, cluster: str) -> Handler:
        def handle(event: InformerEvent) -> None:
            if event.key.name != IC_NAME:
                return
            if cluster:
                self.remote.record(cluster, event.object)
            else:  # mgmt: the declaration's namespace is the cluster
                self.mirror.record(event.key.namespace or "", event.object)

        return handle
