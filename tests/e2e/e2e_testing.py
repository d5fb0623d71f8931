"""What the end-to-end tests share: the stack, the clusters' clients, the pods, the bus read back.

Everything here observes real processes (`devstack.stack`): Kubernetes through `shared.k8s`
(`KubeClient`), the bus through `shared.bus` as the `issuer` NATS user (the stream and the
ledger are read with `shared.bus.ledger.Ledger.read`, an ephemeral unacknowledged consumer, which
reads any stream, not only a ledger). Waiting is always a poll or a watch with a deadline.

Deliberately not here: any assertion that belongs to one test; helpers return what they saw and
raise `AssertionError` only when a deadline passes.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from devstack.identities import tls_context
from devstack.stack import MGMT, REPO, ROOT_CA_SECRET, Stack
from devstack.stack import status as processes_alive
from shared.api import metadata
from shared.k8s.client import KubeClient
from shared.k8s.errors import NotFound
from shared.k8s.resources import ISSUED_CERTIFICATES, POD_BOUNCE_DIRECTIVES, PODS, SECRETS

IC_NAME = "istio-cacerts"
IC_NAMESPACE = "istio-system"
ISSUED_SECRET = "cacerts"
KEY_SECRET = f"{IC_NAME}-meshtrust-key"
PBD_NAME = "istio-cacerts"
HOSTS = ["spiffe://cluster.local/ns/istio-system/sa/citadel"]
ORG = "meshtrust"
ISSUANCE_ANNOTATION = "meshtrust.io/issuance-id"


@dataclass(frozen=True)
class Selector:
    namespace: str
    app: str
    replicas: int


# deploy/examples/declarations.yaml's podsToBounce, and workloads.yaml's replicas.
SELECTORS = (
    Selector("istio-system", "istiod", 1),
    Selector("istio-ingress", "istio-ingressgateway", 2),
)


def declarations(
    cluster: str, *, key_algorithm: str = "ECDSA", key_size: int = 256, ttl_days: int = 365
) -> str:
    """`deploy/examples/declarations.yaml` for `cluster`, with the given key and lifetime."""
    text = (REPO / "deploy" / "examples" / "declarations.yaml").read_text()
    text = text.replace("CLUSTER", cluster)
    text = text.replace("keyAlgorithm: ECDSA", f"keyAlgorithm: {key_algorithm}")
    text = text.replace("keySize: 256", f"keySize: {key_size}")
    return text.replace("ttlDays: 365", f"ttlDays: {ttl_days}")


@contextmanager
def running_stack(root: Path, **kwargs: Any) -> Iterator[Stack]:
    """`Stack(root, **kwargs)` up for the duration; down (every child reaped) afterwards.

    kubectl caches discovery per host:port under ~/.kube/cache and ports are reused between
    stacks, so every stack gets its own cache directory.
    """
    # A module's tests share one stack, and most re-issue every cluster's certificate: more
    # than the issuer's default burst of 5 new signatures per cluster and hour, whose tests
    # are tests/issuer/test_issuer_quota.py.
    env = {name: dict(values) for name, values in (kwargs.pop("env", None) or {}).items()}
    env.setdefault("issuer", {}).setdefault("MESHTRUST_ISSUER_ISSUANCE_BURST", "1000")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("KUBECACHEDIR", str(root / "kubecache"))
        stack = Stack(root / "devstack", env=env, **kwargs)
        try:
            stack.up()
            yield stack
        finally:
            stack.down()


def ensure_running(stack: Stack) -> None:
    """Start again every process a previous (failed) test may have left dead."""
    for name, alive in processes_alive(stack.root).items():
        if not alive and name != "kubeapi":
            stack.start(name)


def set_latency(stack: Stack, cluster: str, seconds: float) -> None:
    """The emulator's fault injection: `seconds` added to every API request of `cluster`."""
    assert stack.info is not None
    url = stack.info.clusters[cluster]["url"] + "/_emulator/faults/latency"
    request = urllib.request.Request(  # noqa: S310 (a loopback URL the stack recorded)
        url,
        data=json.dumps({"seconds": seconds}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    context = tls_context(stack.kubeconfig(cluster))  # the clusters serve HTTPS
    with urllib.request.urlopen(request, timeout=10, context=context) as answer:  # noqa: S310
        assert answer.status == 200


# --- Kubernetes -----------------------------------------------------------------------------


def decoded(secret: Mapping[str, Any]) -> dict[str, bytes]:
    return {k: base64.b64decode(v) for k, v in (secret.get("data") or {}).items()}


async def get_or_none(
    client: KubeClient, resource: Any, name: str, namespace: str
) -> dict[str, Any] | None:
    try:
        return dict(await client.get(resource, name, namespace=namespace))
    except NotFound:
        return None


def status_of(obj: Mapping[str, Any] | None) -> dict[str, Any]:
    return dict((obj or {}).get("status") or {})


@dataclass(frozen=True)
class Finished:
    """A remote IssuedCertificate seen FINISHED."""

    cluster: str
    issuance: str
    serial: str
    status: dict[str, Any]


class World:
    """Clients for mgmt and every remote cluster of one stack (an async context manager)."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.remotes = list(stack.remotes)
        self.kube = {
            c: KubeClient.from_kubeconfig(stack.kubeconfig(c)) for c in [MGMT, *stack.remotes]
        }

    async def __aenter__(self) -> World:
        for client in self.kube.values():
            await client.__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> None:
        for client in self.kube.values():
            await client.__aexit__(None, None, None)

    async def ic(self, cluster: str) -> dict[str, Any] | None:
        return await get_or_none(self.kube[cluster], ISSUED_CERTIFICATES, IC_NAME, IC_NAMESPACE)

    async def pbd(self, cluster: str) -> dict[str, Any] | None:
        return await get_or_none(self.kube[cluster], POD_BOUNCE_DIRECTIVES, PBD_NAME, IC_NAMESPACE)

    async def secret(self, cluster: str, name: str) -> dict[str, bytes] | None:
        secret = await get_or_none(self.kube[cluster], SECRETS, name, IC_NAMESPACE)
        return None if secret is None else decoded(secret)

    async def secret_object(self, cluster: str, name: str) -> dict[str, Any] | None:
        return await get_or_none(self.kube[cluster], SECRETS, name, IC_NAMESPACE)

    async def issuances(self) -> dict[str, str | None]:
        """The current `status.issuanceId` of every remote IssuedCertificate (None: none yet)."""
        return {c: status_of(await self.ic(c)).get("issuanceId") for c in self.remotes}

    async def root_pem(self) -> bytes:
        namespace, name = ROOT_CA_SECRET
        secret = await self.kube[MGMT].get(SECRETS, name, namespace=namespace)
        return decoded(secret)["root-cert.pem"]

    async def redeclare(self, *, ttl_days: int, key_algorithm: str, key_size: int) -> None:
        """Change every declaration's spec in mgmt (one merge patch each): a new issuance."""
        for cluster in self.remotes:
            await self.kube[MGMT].patch_merge(
                ISSUED_CERTIFICATES,
                IC_NAME,
                {
                    "spec": {
                        "certOptions": {
                            "ttlDays": ttl_days,
                            "keyAlgorithm": key_algorithm,
                            "keySize": key_size,
                        }
                    }
                },
                namespace=cluster,
            )

    async def ic_resource_version(self, cluster: str) -> str:
        listed = await self.kube[cluster].list(ISSUED_CERTIFICATES, namespace=IC_NAMESPACE)
        return listed.resource_version

    async def first_seen(
        self,
        cluster: str,
        predicate: Callable[[dict[str, Any]], bool],
        *,
        after: str,
        within: float,
        what: str,
    ) -> dict[str, Any]:
        """Watch the remote IssuedCertificate from resourceVersion `after`; return the first
        version for which `predicate` holds (seen as soon as the API server sends it)."""
        deadline = time.monotonic() + within
        rv = after
        seen: list[str] = []
        try:
            async with asyncio.timeout(within):
                while True:
                    watch = self.kube[cluster].watch(
                        ISSUED_CERTIFICATES,
                        namespace=IC_NAMESPACE,
                        resource_version=rv,
                        field_selector=f"metadata.name={IC_NAME}",
                        timeout_seconds=max(1, int(deadline - time.monotonic()) + 1),
                    )
                    async with watch as events:
                        async for event in events:
                            rv = event.resource_version or rv
                            if event.type in ("ADDED", "MODIFIED"):
                                status = status_of(event.object)
                                seen.append(f"{status.get('state')}/{status.get('issuanceId')}")
                                if predicate(event.object):
                                    return event.object
        except TimeoutError:
            raise AssertionError(
                f"{cluster}: {what} not seen within {within:.0f}s; saw {seen}"
            ) from None

    async def wait_finished(
        self, previous: Mapping[str, str | None], *, within: float
    ) -> dict[str, Finished]:
        """Poll (50 ms) until every remote IssuedCertificate is FINISHED for an issuance other
        than `previous[cluster]`, with observedGeneration caught up; AssertionError naming
        every cluster's last status when `within` seconds pass."""
        deadline = time.monotonic() + within
        done: dict[str, Finished] = {}
        history: dict[str, list[str]] = {c: [] for c in self.remotes}
        last: dict[str, dict[str, Any]] = {}
        while True:
            for cluster in self.remotes:
                if cluster in done:
                    continue
                obj = await self.ic(cluster)
                status = status_of(obj)
                last[cluster] = status
                label = f"{status.get('state')}/{status.get('issuanceId')}"
                if not history[cluster] or history[cluster][-1] != label:
                    history[cluster].append(label)
                if (
                    obj is not None
                    and status.get("state") == "FINISHED"
                    and status.get("issuanceId") not in (None, previous.get(cluster))
                    and status.get("observedGeneration") == obj["metadata"]["generation"]
                ):
                    done[cluster] = Finished(
                        cluster, status["issuanceId"], status["serialNumber"], status
                    )
            if len(done) == len(self.remotes):
                return done
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"not FINISHED within {within:.0f}s: states seen {history}, last {last}"
                )
            await asyncio.sleep(0.05)


# --- pods -----------------------------------------------------------------------------------


@dataclass
class PodRecord:
    """Every pod of one namespace of one cluster, from a list and the watch that followed it."""

    initial: dict[str, str] = field(default_factory=dict)  # name -> uid
    added: dict[str, str] = field(default_factory=dict)
    deleted: dict[str, str] = field(default_factory=dict)


class PodLog:
    """Watches the pods of every selector's namespace in every remote cluster."""

    def __init__(self, world: World) -> None:
        self._world = world
        self.records: dict[tuple[str, str], PodRecord] = {}
        self._tasks: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> PodLog:
        for cluster in self._world.remotes:
            for selector in SELECTORS:
                client = self._world.kube[cluster]
                listed = await client.list(
                    PODS, namespace=selector.namespace, label_selector={"app": selector.app}
                )
                record = PodRecord(
                    initial={p["metadata"]["name"]: p["metadata"]["uid"] for p in listed.items}
                )
                self.records[(cluster, selector.namespace)] = record
                self._tasks.append(
                    asyncio.create_task(
                        self._follow(client, selector, listed.resource_version, record),
                        name=f"pods {cluster}/{selector.namespace}",
                    )
                )
        return self

    async def __aexit__(self, *exc: object) -> None:
        for task in self._tasks:
            task.cancel()
        results = await asyncio.gather(*self._tasks, return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException) and not isinstance(result, asyncio.CancelledError):
                raise result

    @staticmethod
    async def _follow(client: KubeClient, selector: Selector, rv: str, record: PodRecord) -> None:
        while True:
            watch = client.watch(
                PODS,
                namespace=selector.namespace,
                resource_version=rv,
                label_selector={"app": selector.app},
                timeout_seconds=600,
            )
            async with watch as events:
                async for event in events:
                    rv = event.resource_version or rv
                    meta = metadata(event.object)
                    if event.type == "ADDED":
                        record.added[meta.name] = meta.uid
                    elif event.type == "DELETED":
                        record.deleted[meta.name] = meta.uid

    async def replaced_once(self, cluster: str, *, within: float = 20.0) -> None:
        """Every selector's pods of `cluster` were replaced exactly once: each pod that was
        there at the start was deleted, each got one replacement (the Deployment's replicas),
        no replacement was deleted again, and the pods now running are exactly those."""
        deadline = time.monotonic() + within
        while True:
            problems = await self._problems(cluster)
            if not problems:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"{cluster}: pods not replaced exactly once: {problems}")
            await asyncio.sleep(0.05)

    async def _problems(self, cluster: str) -> list[str]:
        problems = []
        for selector in SELECTORS:
            record = self.records[(cluster, selector.namespace)]
            listed = await self._world.kube[cluster].list(
                PODS, namespace=selector.namespace, label_selector={"app": selector.app}
            )
            now = {p["metadata"]["name"]: p["metadata"]["uid"] for p in listed.items}
            where = f"{selector.namespace} app={selector.app}"
            if len(record.initial) != selector.replicas:
                problems.append(
                    f"{where}: {len(record.initial)} pods before, not {selector.replicas}"
                )
            if record.deleted != record.initial:
                problems.append(f"{where}: deleted {record.deleted}, before {record.initial}")
            if len(record.added) != selector.replicas:
                problems.append(f"{where}: {len(record.added)} replacements {record.added}")
            if now != record.added:
                problems.append(f"{where}: running {now}, replacements {record.added}")
            if set(now.values()) & set(record.initial.values()):
                problems.append(f"{where}: an old pod runs still: {now}")
        return problems

    def bounced_names(self, cluster: str) -> list[list[str]]:
        """Per selector, the names of the pods there at the start (what must be recorded)."""
        return [sorted(self.records[(cluster, s.namespace)].initial) for s in SELECTORS]


def recorded_bounces(pbd: Mapping[str, Any] | None) -> tuple[str | None, list[list[str]]]:
    """The directive's record: (status.issuanceId, bounced pod names per selector)."""
    status = status_of(pbd)
    sets = status.get("podsBounced") or []
    return status.get("issuanceId"), [sorted(s.get("bouncedPods") or []) for s in sets]
