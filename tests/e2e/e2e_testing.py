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
import shutil
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from devstack.stack import MGMT, REPO, ROOT_CA_SECRET, Stack
from devstack.stack import status as processes_alive
from shared.bus import Bus
from shared.bus.ledger import Ledger, LedgerEntry
from shared.k8s.client import KubeClient
from shared.k8s.errors import NotFound
from shared.k8s.resources import ISSUED_CERTIFICATES, POD_BOUNCE_DIRECTIVES, PODS, SECRETS
from shared.pki import fingerprint, load_private_key

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
    with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310
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
                    meta = event.object.get("metadata") or {}
                    if event.type == "ADDED":
                        record.added[meta["name"]] = meta["uid"]
                    elif event.type == "DELETED":
                        record.deleted[meta["name"]] = meta["uid"]

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


# --- the bus --------------------------------------------------------------------------------


@asynccontextmanager
async def issuer_bus(stack: Stack) -> AsyncIterator[Bus]:
    """A bus connection as the `issuer` NATS user (who may read every stream)."""
    settings = stack.nats_settings(
        "issuer",
        request_timeout=2.0,
        publish_deadline=10.0,
        connect_deadline=10.0,
        reconnect_wait=0.2,
    )
    async with Bus.connect(settings) as bus:
        yield bus


async def read_stream(bus: Bus, stream: str, subjects: tuple[str, ...]) -> list[LedgerEntry]:
    """Every message of `stream` from its first sequence (all subjects), in order."""
    reader = Ledger(bus.connection, stream=stream, subjects=subjects)
    return [entry async for entry in reader.read()]


async def ledger(stack: Stack) -> list[dict[str, Any]]:
    """Every signature the issuer recorded (MESHTRUST_LEDGER), as JSON objects."""
    async with issuer_bus(stack) as bus:
        entries = await read_stream(bus, "MESHTRUST_LEDGER", ("meshtrust.ledger.>",))
    return [json.loads(e.data) for e in entries]


async def events(stack: Stack) -> list[dict[str, Any]]:
    """Every event of the MESHTRUST stream, as JSON objects (with `_subject`, `_seq`)."""
    async with issuer_bus(stack) as bus:
        entries = await read_stream(bus, "MESHTRUST", ("meshtrust.v1.>",))
    return [{**json.loads(e.data), "_subject": e.subject, "_seq": e.sequence} for e in entries]


# --- keys -----------------------------------------------------------------------------------


def key_fingerprint(key_pem: bytes) -> str:
    """SHA-256 of the public key (SPKI) of a PEM private key: what the ledger records."""
    return fingerprint(load_private_key(key_pem).public_key())


def csr_fingerprint(csr_pem: str | bytes) -> str:
    data = csr_pem.encode() if isinstance(csr_pem, str) else csr_pem
    return fingerprint(x509.load_pem_x509_csr(data).public_key())


def serial_of(cert_pem: bytes) -> int:
    return x509.load_pem_x509_certificates(cert_pem)[0].serial_number


def one_signature_per_issuance(entries: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The ledger by issuance; AssertionError if any issuance has more than one entry."""
    by_issuance: dict[str, list[dict[str, Any]]] = {}
    for entry in entries:
        by_issuance.setdefault(entry["issuance"], []).append(entry)
    doubles = {i: [e["serial_number"] for e in es] for i, es in by_issuance.items() if len(es) != 1}
    assert not doubles, f"issuances signed more than once (serials): {doubles}"
    return {i: es[0] for i, es in by_issuance.items()}


def openssl_verify(root: bytes, data: Mapping[str, bytes]) -> subprocess.CompletedProcess[str]:
    """`openssl verify` of a cacerts bundle against `root` (chain as untrusted intermediates)."""
    openssl = shutil.which("openssl")
    assert openssl is not None, "openssl is needed for the independent chain check"
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        (directory / "root.pem").write_bytes(root)
        (directory / "chain.pem").write_bytes(data["cert-chain.pem"])
        (directory / "cert.pem").write_bytes(data["ca-cert.pem"])
        return subprocess.run(
            [openssl, "verify", "-CAfile", str(directory / "root.pem"), "-untrusted",
             str(directory / "chain.pem"), str(directory / "cert.pem")],
            capture_output=True, text=True, check=False, timeout=60,
        )  # fmt: skip


# --- one issuance per round: one key, one signature ------------------------------------------


async def known_issuances(stack: Stack) -> set[str]:
    """Every issuance the ledger or the stream has heard of so far."""
    return {e["issuance"] for e in await ledger(stack)} | {
        e["issuance"] for e in await events(stack)
    }


async def check_one_key_and_one_signature(
    world: World, finished: Mapping[str, Finished], *, known: set[str]
) -> dict[str, dict[str, Any]]:
    """For every cluster, since `known`: exactly one issuance was started (every CSR on the bus
    is of it) and signed once (one ledger entry); every CSR sent for it carries one and the same
    public key, the one the ledger recorded; the final cacerts holds that key and the signed
    serial, and the key Secret is gone. No issuance since `known` has two ledger entries.
    Returns the ledger entry of each cluster's final issuance.

    Reads the ledger only once the issuer has finished with every CSR delivered to it: a
    second signature made by a late handler would otherwise be appended after the check."""
    await wait_issuer_idle(world.stack, within=60)
    entries = await ledger(world.stack)
    # Issuances of earlier rounds were judged by their own test.
    by_issuance = one_signature_per_issuance([e for e in entries if e["issuance"] not in known])
    bus_events = await events(world.stack)
    final: dict[str, dict[str, Any]] = {}
    for cluster, done in finished.items():
        signed = [e for e in entries if e["cluster"] == cluster and e["issuance"] not in known]
        assert [e["issuance"] for e in signed] == [done.issuance], (
            f"{cluster}: signatures since the round began {signed}, expected one for "
            f"{done.issuance}"
        )
        entry = by_issuance[done.issuance]
        assert int(entry["serial_number"], 16) == int(done.serial, 16)
        csrs = [
            e
            for e in bus_events
            if e["type"] == "csr.requested"
            and e["cluster"] == cluster
            and e["issuance"] not in known
        ]
        assert csrs, f"{cluster}: no csr.requested on the bus for {done.issuance}"
        assert {e["issuance"] for e in csrs} == {done.issuance}, (
            f"{cluster}: CSRs of several issuances in one round: {[e['issuance'] for e in csrs]}"
        )
        keys = {csr_fingerprint(e["data"]["csr_pem"]) for e in csrs}
        assert keys == {entry["csr_public_key_fingerprint"]}, (
            f"{cluster}: {len(csrs)} CSRs for {done.issuance} carry keys {keys}, "
            f"ledger {entry['csr_public_key_fingerprint']}"
        )
        secret = await world.secret_object(cluster, ISSUED_SECRET)
        assert secret is not None
        cacerts = decoded(secret)
        assert key_fingerprint(cacerts["ca-key.pem"]) == entry["csr_public_key_fingerprint"]
        assert serial_of(cacerts["ca-cert.pem"]) == int(entry["serial_number"], 16)
        annotations = secret["metadata"].get("annotations") or {}
        assert annotations.get(ISSUANCE_ANNOTATION) == done.issuance
        # Until ISSUED the key lives in the key Secret; after it, only in cacerts.
        assert await world.secret_object(cluster, KEY_SECRET) is None
        final[cluster] = entry
    return final


async def wait_csr_stored(stack: Stack, cluster: str, issuance: str, *, within: float) -> None:
    """Poll the MESHTRUST stream until a csr.requested of `issuance` is stored in it."""
    deadline = time.monotonic() + within
    async with issuer_bus(stack) as bus:
        while True:
            entries = await read_stream(
                bus, "MESHTRUST", (f"meshtrust.v1.{cluster}.csr.requested",)
            )
            if any(json.loads(e.data)["issuance"] == issuance for e in entries):
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"no csr.requested of {issuance} stored within {within}s")
            await asyncio.sleep(0.01)


async def wait_issuer_idle(stack: Stack, *, within: float) -> None:
    """Poll until the issuer's CSR consumer has nothing pending and nothing unacknowledged."""
    deadline = time.monotonic() + within
    async with issuer_bus(stack) as bus:
        while True:
            info = await bus.connection.js.consumer_info("MESHTRUST", "issuer")
            if info.num_pending == 0 and info.num_ack_pending == 0:
                return
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"the issuer still has CSRs after {within}s: {info.num_pending} pending, "
                    f"{info.num_ack_pending} unacknowledged"
                )
            await asyncio.sleep(0.05)


def private_key_forms(cluster: str, key_pem: bytes) -> list[tuple[str, bytes]]:
    """The ways a private key could be written into a message: its PEM body (whole, and line
    by line), its DER (PKCS#8 and the traditional form), raw and base64, and its secret
    number in hex."""
    key = load_private_key(key_pem)
    body = [line for line in key_pem.splitlines() if line and not line.startswith(b"-----")]
    forms = [(f"{cluster} ca-key.pem body", b"".join(body))]
    # Every full 64-character line (the last one may be short and too common to be telling).
    forms += [
        (f"{cluster} ca-key.pem line {i}", line) for i, line in enumerate(body) if len(line) == 64
    ]
    for label, fmt in (
        ("PKCS#8", serialization.PrivateFormat.PKCS8),
        ("traditional", serialization.PrivateFormat.TraditionalOpenSSL),
    ):
        der = key.private_bytes(serialization.Encoding.DER, fmt, serialization.NoEncryption())
        forms += [
            (f"{cluster} {label} DER", der),
            (f"{cluster} {label} DER, base64", base64.b64encode(der)),
            (f"{cluster} {label} DER, url-safe base64", base64.urlsafe_b64encode(der).rstrip(b"=")),
            (f"{cluster} {label} DER, hex", der.hex().encode()),
        ]
    if isinstance(key, rsa.RSAPrivateKey):
        secret = key.private_numbers().d
    else:
        secret = key.private_numbers().private_value
    forms.append((f"{cluster} private number, hex", f"{secret:x}".encode()))
    return forms
