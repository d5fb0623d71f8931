"""The other side of the bus for the agent's tests: an issuer that signs with `shared.pki`, a
bouncer, an audit recorder, and a way to run (kill, restart) the agent in-process.

The issuer here is test code, independent of `services/issuer`: it checks each CSR against the
IssuedCertificate it reads from the emulator, signs with a CA made at test time (bare
`cryptography`, `pki.pki_testing.make_ca`) and answers on the bus as the contract says
(docs/flow.md). Behaviour is switchable per test (`mode`).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import subprocess
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pki.pki_testing import key_pem, make_ca, pem

from services.agent.app import Agent
from services.agent.app import serve as run_agent
from services.agent.objects import secret_bytes
from services.agent.settings import AgentSettings
from shared.api.v1alpha2 import IssuedCertificate, State
from shared.bus import Bus, ConsumerSettings, Delivery
from shared.events import (
    BounceCompleted,
    BounceCompletedData,
    BounceRequested,
    CertificateDenied,
    CertificateDeniedData,
    CertificateIssued,
    CertificateIssuedData,
    CsrRequested,
    Event,
    EventType,
    StatusChanged,
    any_cluster,
)
from shared.k8s.backoff import BackoffPolicy
from shared.k8s.client import KubeClient
from shared.k8s.errors import AlreadyExists, NotFound
from shared.k8s.informer import InformerSettings
from shared.k8s.resources import CONFIG_MAPS, ISSUED_CERTIFICATES, NAMESPACES, SECRETS
from shared.pki import (
    Bundle,
    KeyAlgorithm,
    KeyPolicy,
    KeySpec,
    SigningCA,
    check_csr,
    generate_private_key,
    load_signing_ca,
    serial_hex,
    sign_intermediate,
)
from shared.runtime.clock import utcnow

P256 = KeySpec(algorithm=KeyAlgorithm.ECDSA, size=256)
FAST_INFORMER = InformerSettings(backoff=BackoffPolicy(base_seconds=0.05, cap_seconds=0.5))
FAST_BACKOFF = BackoffPolicy(base_seconds=0.05, cap_seconds=1.0)


def make_signing_ca() -> SigningCA:
    """root -> intermediate (the signing CA), valid around the real clock."""
    now = utcnow()
    root = make_ca(
        cn="agent-test-root",
        private_key=generate_private_key(P256),
        not_before=now - dt.timedelta(days=1),
        not_after=now + dt.timedelta(days=30),
    )
    signer = make_ca(
        cn="agent-test-signer",
        private_key=generate_private_key(P256),
        parent=root,
        not_before=now - dt.timedelta(days=1),
        not_after=now + dt.timedelta(days=30),
    )
    data = {
        "ca-cert.pem": pem(signer.cert),
        "ca-key.pem": key_pem(signer.key),
        "cert-chain.pem": pem(signer.cert, root.cert),
        "root-cert.pem": pem(root.cert),
    }
    return load_signing_ca(data, now=now)


def ic_body(
    name: str,
    namespace: str,
    *,
    secret: str | None = None,
    bounce: str | None = None,
    **cert_options: Any,
) -> dict[str, Any]:
    """An IssuedCertificate with an ECDSA key (fast), unless `cert_options` say otherwise."""
    spec: dict[str, Any] = {
        "hosts": [f"spiffe://cluster.local/ns/{namespace}/sa/{name}"],
        "org": "meshtrust",
        "signingCertificateSecret": {"name": "root-ca", "namespace": "east"},
        "issuedCertificateSecret": {"name": secret or f"{name}-cacerts", "namespace": namespace},
        "certOptions": {"keyAlgorithm": "ECDSA", "keySize": 256, **cert_options},
    }
    if bounce is not None:
        spec["podBounceDirective"] = {"name": bounce, "namespace": namespace}
    return {
        "apiVersion": "certificates.smh.solo.io/v1alpha2",
        "kind": "IssuedCertificate",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


TRUST_BUNDLE = ("meshtrust-system", "meshtrust-trust-bundle")
"""The agent's default trust bundle ConfigMap (`MESHTRUST_AGENT_TRUST_BUNDLE`)."""


async def put_trust_bundle(kube: KubeClient, roots_pem: str) -> None:
    """Create or replace the trust bundle ConfigMap with `roots_pem`."""
    namespace, name = TRUST_BUNDLE
    with contextlib.suppress(AlreadyExists):
        await kube.create(
            NAMESPACES, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}
        )
    body: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace},
        "data": {"roots.pem": roots_pem},
    }
    try:
        current = await kube.get(CONFIG_MAPS, name, namespace=namespace)
    except NotFound:
        await kube.create(CONFIG_MAPS, body)
        return
    body["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
    await kube.replace(CONFIG_MAPS, body)


@dataclass
class FakeIssuer:
    """Answers csr.requested: `sign` (default), `deny`, `silent` (no answer at all), or
    `limit`: deny the next one `RateLimited` with `retry_after`, then sign."""

    bus: Bus
    kube: KubeClient
    ca: SigningCA
    mode: str = "sign"
    deny_reason: str = "HostsMismatch"
    deny_message: str = "hosts differ from the declaration"
    retry_after: dt.datetime | None = None
    requests: list[CsrRequested] = field(default_factory=list)
    received_at: list[dt.datetime] = field(default_factory=list)
    answers: list[CertificateIssued] = field(default_factory=list)

    async def __call__(self, event: Event, delivery: Delivery) -> None:
        assert isinstance(event, CsrRequested)
        self.requests.append(event)
        self.received_at.append(utcnow())
        if self.mode == "silent":
            return
        data = event.data
        listed = await self.kube.list(
            ISSUED_CERTIFICATES, field_selector=f"metadata.name={data.name}"
        )
        ic = IssuedCertificate.from_object(listed.items[0])
        if self.mode == "limit":
            self.mode = "sign"
            await self.deny(
                event, "RateLimited", "cluster is over its issuance rate", self.retry_after
            )
            return
        if self.mode == "deny":
            await self.deny(event, self.deny_reason, self.deny_message)
            return
        answer = self.sign(event, ic)
        self.answers.append(answer)
        await self.bus.publish(answer)

    async def deny(
        self,
        event: CsrRequested,
        reason: str,
        message: str,
        retry_after: dt.datetime | None = None,
    ) -> None:
        data = event.data
        await self.bus.publish(
            CertificateDenied(
                source="issuer/test",
                cluster=event.cluster,
                issuance=event.issuance,
                data=CertificateDeniedData(
                    name=data.name,
                    declaration_generation=data.declaration_generation,
                    attempt=data.attempt,
                    reason=reason,
                    message=message,
                    retry_after=retry_after,
                ),
            )
        )

    def sign(self, event: CsrRequested, ic: IssuedCertificate) -> CertificateIssued:
        data = event.data
        spec = ic.spec
        csr = check_csr(data.csr_pem.encode(), hosts=spec.hosts, org=spec.org, policy=KeyPolicy())
        issued = sign_intermediate(
            csr,
            self.ca,
            hosts=spec.hosts,
            org=spec.org,
            name=data.name,
            ttl=spec.cert_options.lifetime,
            now=utcnow(),
        )
        chain = issued.chain_pem[len(issued.certificate_pem) :]
        return CertificateIssued(
            source="issuer/test",
            cluster=event.cluster,
            issuance=event.issuance,
            data=CertificateIssuedData(
                name=data.name,
                declaration_generation=data.declaration_generation,
                attempt=data.attempt,
                serial_number=serial_hex(issued.serial),
                certificate_pem=issued.certificate_pem.decode(),
                ca_chain_pem=chain.decode(),
                root_cert_pem=issued.root_pem.decode(),
                not_before=issued.not_before,
                not_after=issued.not_after,
            ),
        )


@dataclass
class FakeBouncer:
    """Answers bounce.requested with bounce.completed (with `error`, when set)."""

    bus: Bus
    error: str | None = None
    requests: list[BounceRequested] = field(default_factory=list)

    async def __call__(self, event: Event, delivery: Delivery) -> None:
        assert isinstance(event, BounceRequested)
        self.requests.append(event)
        await self.bus.publish(
            BounceCompleted(
                source="bouncer/test",
                cluster=event.cluster,
                issuance=event.issuance,
                data=BounceCompletedData(
                    directive=event.data.directive,
                    issued_certificate=event.data.issued_certificate,
                    error=self.error,
                ),
            )
        )


@dataclass
class Audit:
    """Every status.changed, as the issuer's status mirror would see them."""

    events: list[StatusChanged] = field(default_factory=list)

    async def __call__(self, event: Event, delivery: Delivery) -> None:
        assert isinstance(event, StatusChanged)
        self.events.append(event)

    def states(self, name: str) -> list[str]:
        return [e.data.state.value for e in self.events if e.data.name == name]


def consumer_settings(durable: str, event: EventType) -> ConsumerSettings:
    return ConsumerSettings(
        durable=durable,
        filter_subjects=(any_cluster(event),),
        fetch_timeout=0.2,
        retry_initial=0.1,
        retry_max=0.5,
        record_completed=False,
    )


@contextlib.asynccontextmanager
async def running_consumers(bus: Bus, *handlers: tuple[str, EventType, Any]) -> AsyncIterator[None]:
    stop = asyncio.Event()
    async with asyncio.TaskGroup() as group:
        for durable, event, handler in handlers:
            consumer = bus.consumer(consumer_settings(durable, event), handler)
            group.create_task(consumer.run(stop), name=durable)
        try:
            yield
        finally:
            stop.set()


class AgentProcess:
    """The agent run in-process through its composition function (`app.serve`), on the fixtures'
    NATS and emulator. `kill()` cancels its task group (a crash: nothing graceful);
    `start()` starts a fresh one on the same durable state."""

    def __init__(
        self,
        settings: AgentSettings,
        *,
        now: Callable[[], dt.datetime] = utcnow,
        rand: Callable[[], float] | None = None,
    ) -> None:
        self.settings = settings
        self.now = now
        self.rand = rand
        self.agent: Agent | None = None
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self.starts = 0

    def _started(self, agent: Agent) -> None:
        self.agent = agent

    async def start(self) -> None:
        self._stop = asyncio.Event()
        self.agent = None
        self.starts += 1
        options: dict[str, Any] = {"rand": self.rand} if self.rand is not None else {}
        self._task = asyncio.create_task(
            run_agent(
                self.settings,
                stop=self._stop,
                handle_signals=False,
                now=self.now,
                informer_settings=FAST_INFORMER,
                controller_backoff=FAST_BACKOFF,
                started=self._started,
                **options,
            ),
            name=f"agent-{self.starts}",
        )

    async def kill(self) -> None:
        """Cancel everything at once, as a SIGKILL would (the connections are closed)."""
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is None:
            return
        self._stop.set()
        await task

    def check(self) -> None:
        """Raise what the agent died of, if it died."""
        if self._task is not None and self._task.done():
            self._task.result()


async def ic_status(kube: KubeClient, namespace: str, name: str) -> dict[str, Any]:
    raw = await kube.get(ISSUED_CERTIFICATES, name, namespace=namespace)
    return dict(raw.get("status") or {})


async def state_of(kube: KubeClient, namespace: str, name: str) -> str | None:
    from shared.k8s.errors import NotFound

    try:
        return (await ic_status(kube, namespace, name)).get("state")
    except NotFound:
        return None


async def get_secret(kube: KubeClient, namespace: str, name: str) -> dict[str, bytes] | None:
    from shared.k8s.errors import NotFound

    try:
        raw = await kube.get(SECRETS, name, namespace=namespace)
    except NotFound:
        return None
    return secret_bytes(raw)


def bundle_of(data: dict[str, bytes]) -> Bundle:
    return Bundle.from_secret_data(data)


def openssl_verify(bundle: Bundle, directory: Path) -> subprocess.CompletedProcess[str]:
    """`openssl verify` of the issued chain; the key is never written to disk."""
    for name, value in bundle.to_secret_data().items():
        if name != "ca-key.pem":
            (directory / name).write_bytes(value)
    return subprocess.run(
        [
            "openssl",
            "verify",
            "-CAfile",
            str(directory / "root-cert.pem"),
            "-untrusted",
            str(directory / "cert-chain.pem"),
            str(directory / "ca-cert.pem"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )


__all__ = ["FINISHED", "State"]
FINISHED = State.FINISHED.value


async def wait_status(
    kube: KubeClient,
    namespace: str,
    name: str,
    predicate: Callable[[dict[str, Any]], bool],
    *,
    within: float = 20.0,
    message: str = "the status",
) -> dict[str, Any]:
    """Poll the IssuedCertificate's status until `predicate` holds; return that status (the
    state machine may move on right after, so assertions use this copy)."""
    from support.waiting import eventually

    async def check() -> dict[str, Any] | None:
        status = await ic_status(kube, namespace, name)
        return status if predicate(status) else None

    result = await eventually(check, within=within, message=message)
    assert result is not None
    return result
