"""Fixtures for the bouncer's integration tests: an emulated cluster `east` with an istiod-like
Deployment and a gateway Deployment, the agent's side of the bus played by test code, and the
bouncer itself run in-process through its real composition (`services.bouncer.app.serve`).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import stamina
from k8s.harness import crd_documents

from devstack.kubeapi import KubeAPI
from services.bouncer.app import serve
from services.bouncer.policies import RESTARTED_FOR, is_ready, is_terminating
from services.bouncer.settings import BouncerSettings
from shared.api.meta import ObjectKey
from shared.bus import Bus, ConsumerSettings, Delivery, NatsSettings
from shared.events import (
    BounceCompleted,
    BounceRequested,
    BounceRequestedData,
    Event,
    EventType,
    ObjectRef,
    subject,
)
from shared.k8s.client import KubeClient
from shared.k8s.config import KubeSettings
from shared.k8s.errors import KubeError
from shared.k8s.informer import Informer, InformerEvent
from shared.k8s.resources import (
    CONFIG_MAPS,
    CUSTOM_RESOURCE_DEFINITIONS,
    DEPLOYMENTS,
    ISSUED_CERTIFICATES,
    NAMESPACES,
    POD_BOUNCE_DIRECTIVES,
    PODS,
    SECRETS,
)
from shared.runtime import LoggingSettings
from shared.runtime.health import HealthServer, HealthSettings
from support.waiting import eventually

CLUSTER = "east"
ISTIO = "istio-system"
GATEWAYS = "gateways"
ROOT_A = "-----BEGIN CERTIFICATE-----\nROOT-A\n-----END CERTIFICATE-----\n"
ROOT_B = "-----BEGIN CERTIFICATE-----\nROOT-B\n-----END CERTIFICATE-----\n"


@pytest.fixture(autouse=True)
def _no_retry_waits() -> Any:
    """stamina's retries (status conflicts, publish) without their sleeps."""
    with stamina.set_testing(True, attempts=20, cap=True):
        yield


@pytest.fixture
def pod_ready_delay() -> float:
    """Seconds until the emulated kubelet turns a new pod Ready; parametrize to change it."""
    return 0.05


@pytest.fixture
def pod_termination_delay() -> float | None:
    """Seconds a deleted pod stays Terminating (None: its whole 30 s grace period)."""
    return 0.5


@pytest.fixture
async def cluster(
    pod_ready_delay: float, pod_termination_delay: float | None
) -> AsyncIterator[KubeAPI]:
    async with KubeAPI(
        name=CLUSTER, pod_ready_delay=pod_ready_delay, pod_termination_delay=pod_termination_delay
    ) as api:
        yield api


@pytest.fixture
async def kube(cluster: KubeAPI) -> AsyncIterator[KubeClient]:
    async with KubeClient.from_kubeconfig_dict(cluster.kubeconfig_dict()) as client:
        yield client


def deployment(name: str, namespace: str, replicas: int) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "main", "image": f"example/{name}:1"}]},
            },
        },
    }


def selector(namespace: str, app: str, wait: int, **extra: Any) -> dict[str, Any]:
    return {"namespace": namespace, "labels": {"app": app}, "waitForReplicas": wait, **extra}


def root_cert_sync() -> dict[str, Any]:
    return {
        "secretRef": {"name": "cacerts", "namespace": ISTIO},
        "secretKey": "root-cert.pem",
        "configMapRef": {"name": "istio-ca-root-cert", "namespace": GATEWAYS},
        "configMapKey": "root-cert.pem",
    }


@dataclass
class Mesh:
    """The workloads of `east`, and the objects the agent would have written."""

    kube: KubeClient
    api: KubeAPI

    async def install(self, *, istiod: int = 1, gateways: int = 2) -> None:
        for doc in crd_documents():
            await self.kube.create(CUSTOM_RESOURCE_DEFINITIONS, doc)

        async def served() -> bool:
            try:
                await self.kube.list(POD_BOUNCE_DIRECTIVES, namespace="default", limit=1)
                await self.kube.list(ISSUED_CERTIFICATES, namespace="default", limit=1)
            except KubeError:
                return False
            return True

        await eventually(served, message="CRDs served")
        for ns in (ISTIO, GATEWAYS):
            await self.kube.create(
                NAMESPACES, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}
            )
        await self.kube.create(
            SECRETS,
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": "cacerts", "namespace": ISTIO},
                "data": {"root-cert.pem": base64.b64encode(ROOT_B.encode()).decode()},
            },
        )
        await self.kube.create(
            CONFIG_MAPS,
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": "istio-ca-root-cert", "namespace": GATEWAYS},
                "data": {"root-cert.pem": ROOT_A},
            },
        )
        if istiod:
            await self.kube.create(DEPLOYMENTS, deployment("istiod", ISTIO, istiod))
        if gateways:
            await self.kube.create(DEPLOYMENTS, deployment("gateway", GATEWAYS, gateways))
        await eventually(
            lambda: self.all_ready(istiod=istiod, gateways=gateways),
            within=20,
            message="the initial pods Ready",
        )

    async def all_ready(self, *, istiod: int, gateways: int) -> bool:
        ours = [p for p in await self.pods(ISTIO, "istiod") if is_ready(p)]
        theirs = [p for p in await self.pods(GATEWAYS, "gateway") if is_ready(p)]
        return len(ours) == istiod and len(theirs) == gateways

    async def pods(self, namespace: str, app: str) -> list[dict[str, Any]]:
        """The live pods: not those Terminating after a bounce (they linger for a while)."""
        listed = await self.kube.list(PODS, namespace=namespace, label_selector={"app": app})
        return [p for p in listed.items if not is_terminating(p)]

    async def names(self, namespace: str, app: str) -> set[str]:
        return {p["metadata"]["name"] for p in await self.pods(namespace, app)}

    async def certificate(self, issuance: str, name: str = "istio-ca") -> None:
        """The remote IssuedCertificate, with the agent's current issuance in its status."""
        try:
            await self.kube.get(ISSUED_CERTIFICATES, name, namespace=ISTIO)
        except KubeError:
            await self.kube.create(
                ISSUED_CERTIFICATES,
                {
                    "apiVersion": "certificates.smh.solo.io/v1alpha2",
                    "kind": "IssuedCertificate",
                    "metadata": {"name": name, "namespace": ISTIO},
                    "spec": {
                        "hosts": ["spiffe://cluster.local"],
                        "org": "meshtrust",
                        "signingCertificateSecret": {"name": "root-ca", "namespace": "east"},
                        "issuedCertificateSecret": {"name": "cacerts", "namespace": ISTIO},
                        "podBounceDirective": {"name": "istio-ca", "namespace": ISTIO},
                    },
                },
            )
        await self.kube.patch_status(
            ISSUED_CERTIFICATES,
            name,
            {"status": {"state": "ISSUED", "issuanceId": issuance}},
            namespace=ISTIO,
        )

    async def directive(self, *selectors: dict[str, Any], name: str = "istio-ca") -> None:
        await self.kube.create(
            POD_BOUNCE_DIRECTIVES,
            {
                "apiVersion": "certificates.smh.solo.io/v1alpha2",
                "kind": "PodBounceDirective",
                "metadata": {"name": name, "namespace": ISTIO},
                "spec": {"podsToBounce": list(selectors)},
            },
        )

    async def status(self, name: str = "istio-ca") -> dict[str, Any]:
        obj = await self.kube.get(POD_BOUNCE_DIRECTIVES, name, namespace=ISTIO)
        return dict(obj.get("status") or {})

    async def sync_root(self) -> None:
        await self.kube.patch_merge(
            CONFIG_MAPS,
            "istio-ca-root-cert",
            {"data": {"root-cert.pem": ROOT_B}},
            namespace=GATEWAYS,
        )

    def bouncer_watches(self, resource: str, namespace: str) -> bool:
        """Whether a watch on `resource` (e.g. "/configmaps") in `namespace` is open."""
        return any(w.key == resource and w.namespace == namespace for w in self.api.store.watchers)


@pytest.fixture
async def mesh(kube: KubeClient, cluster: KubeAPI) -> Mesh:
    return Mesh(kube=kube, api=cluster)


@dataclass
class PodLog:
    """Every pod change in the cluster, in resourceVersion order (one watch sees them so)."""

    events: list[tuple[str, str, str, bool]] = field(default_factory=list)
    """(type, namespace, name, ready); type DELETING marks where a pod's deletion began (its
    deletionTimestamp appeared, or it went at once), before its MODIFIED or DELETED event."""
    created: list[tuple[str, str, str | None]] = field(default_factory=list)
    """(namespace, name, its RESTARTED_FOR annotation) of every pod that appeared."""
    _deleting: set[tuple[str, str]] = field(default_factory=set)

    def __call__(self, event: InformerEvent) -> None:
        key = (event.key.namespace, event.key.name)
        ready = is_ready(event.object)
        if key not in self._deleting and (
            event.type.value == "DELETED" or is_terminating(event.object)
        ):
            self._deleting.add(key)
            self.events.append(("DELETING", *key, ready))
        self.events.append((event.type.value, *key, ready))
        if event.type.value == "ADDED":
            annotations = event.object["metadata"].get("annotations") or {}
            self.created.append(
                (event.key.namespace, event.key.name, annotations.get(RESTARTED_FOR))
            )

    def deleted(self, namespace: str | None = None) -> list[str]:
        """The pods whose deletion began, in order."""
        return [
            name
            for kind, ns, name, _ in self.events
            if kind == "DELETING" and (namespace is None or ns == namespace)
        ]


@pytest.fixture
async def pod_log(kube: KubeClient) -> AsyncIterator[PodLog]:
    log = PodLog()
    informer = Informer(kube, PODS)
    informer.add_handler(log)
    async with asyncio.TaskGroup() as group:
        task = group.create_task(informer.run(), name="test:pod-log")
        await informer.wait_synced()
        try:
            yield log
        finally:
            task.cancel()


@dataclass
class Agent:
    """The agent's side of the bus: publishes bounce.requested, collects bounce.completed."""

    bus: Bus
    completed: list[BounceCompleted] = field(default_factory=list)

    async def __call__(self, event: Event, delivery: Delivery) -> None:
        assert isinstance(event, BounceCompleted)
        self.completed.append(event)

    def request(self, issuance: str, directive: str = "istio-ca") -> BounceRequested:
        return BounceRequested(
            source=f"agent/{CLUSTER}",
            cluster=CLUSTER,
            issuance=issuance,
            data=BounceRequestedData(
                directive=ObjectRef(namespace=ISTIO, name=directive),
                issued_certificate=ObjectRef(namespace=ISTIO, name="istio-ca"),
            ),
        )

    async def ask(self, issuance: str, directive: str = "istio-ca") -> BounceRequested:
        request = self.request(issuance, directive)
        await self.bus.publish(request)
        return request

    async def answer(self, issuance: str, *, within: float = 30.0) -> BounceCompleted:
        def found() -> BounceCompleted | None:
            return next((e for e in self.completed if e.issuance == issuance), None)

        return await eventually(found, within=within, message=f"bounce.completed for {issuance}")


@pytest.fixture
async def agent(bus: Bus) -> AsyncIterator[Agent]:
    agent = Agent(bus)
    consumer = bus.consumer(
        ConsumerSettings(
            durable=f"agent-{CLUSTER}",
            filter_subjects=(subject(CLUSTER, EventType.BOUNCE_COMPLETED),),
            fetch_timeout=0.2,
        ),
        agent,
    )
    stop = asyncio.Event()
    async with asyncio.TaskGroup() as group:
        group.create_task(consumer.run(stop), name="test:agent")
        try:
            yield agent
        finally:
            stop.set()


@pytest.fixture
def settings(nats_settings: NatsSettings, cluster: KubeAPI, tmp_path: Path) -> BouncerSettings:
    return make_settings(nats_settings, cluster.write_kubeconfig(tmp_path / "east.kubeconfig"))


def make_settings(nats: NatsSettings, kubeconfig: Path, **overrides: Any) -> BouncerSettings:
    options: dict[str, Any] = {
        "cluster": CLUSTER,
        "instance": "east-0",
        "nats": nats,
        "kube": KubeSettings(kubeconfig=kubeconfig),
        "health": HealthSettings(host="127.0.0.1", port=0),
        "logging": LoggingSettings(level="warning"),
        "ack_wait": 1.5,
        "fetch_timeout": 0.2,
        "retry_initial": 0.1,
        "retry_max": 0.5,
        "root_cert_sync_timeout": 20.0,
        "replicas_timeout": 20.0,
        "rollout_timeout": 20.0,
        "delete_timeout": 5.0,
        "directive_timeout": 1.0,
        "grace": 2.0,
    }
    options.update(overrides)
    return BouncerSettings(**options)


@dataclass
class RunningBouncer:
    task: asyncio.Task[None]
    health: HealthServer
    stop: asyncio.Event


@contextlib.asynccontextmanager
async def running_bouncer(settings: BouncerSettings) -> AsyncIterator[RunningBouncer]:
    """Run a bouncer for the body; `task.cancel()` kills it (its TaskGroup is cancelled)."""
    stop = asyncio.Event()
    health = HealthServer(settings.health)
    async with asyncio.TaskGroup() as group:
        task = group.create_task(
            serve(settings, stop=stop, handle_signals=False, health=health), name="test:bouncer"
        )
        await eventually(lambda: health.started.is_set() or task.done(), message="bouncer up")
        try:
            yield RunningBouncer(task, health, stop)
        finally:
            stop.set()


def key(namespace: str, name: str) -> ObjectKey:
    return ObjectKey(namespace, name)
