"""The issuer's test world: an emulated management cluster, a real nats-server, issuers run
in-process through their composition function, and agents played by test code.

Test CAs (ECDSA P-256) and the agents' keys are made at test time with bare `cryptography`;
nothing is written to disk but the kubeconfigs: the cluster-admin's (`World.kube`, the tests'
own client) and the issuer's (`World.kubeconfig`), whose user is its ServiceAccount with a token
from the TokenRequest API, bound by exactly the RBAC of deploy/management/ (the emulator
enforces it).
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import itertools
from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from k8s.harness import crd_documents
from security.rbac_support import DEPLOY, KINDS, apply, kubeconfig_of

from devstack.kubeapi.kubeconfig import write as write_kubeconfig
from services.issuer.app import serve
from services.issuer.settings import DEFAULT_EXCLUDED_NAMESPACES, IssuerSettings
from shared.bus import Bus, ConsumerSettings, Delivery, NatsSettings
from shared.events import (
    CertificateDenied,
    CertificateIssued,
    CertificateState,
    CsrRequested,
    CsrRequestedData,
    Event,
    StatusChanged,
    StatusChangedData,
    new_issuance_id,
)
from shared.k8s import KubeClient, KubeError
from shared.k8s.config import KubeSettings
from shared.k8s.resources import (
    CUSTOM_RESOURCE_DEFINITIONS,
    ISSUED_CERTIFICATES,
    NAMESPACES,
    POD_BOUNCE_DIRECTIVES,
    SECRETS,
)
from shared.pki import build_csr
from shared.pki.authority import CA_KEY_USAGE
from shared.runtime.health import HealthSettings
from support.waiting import eventually

SYSTEM_NAMESPACE = "meshtrust-system"
SIGNING_SECRET = "root-ca"
ORG = "meshtrust tests"
CLUSTERS = ("east", "west")
MGMT_MANIFESTS = (
    DEPLOY / "management" / "00-namespace.yaml",
    DEPLOY / "management" / "issuer-rbac.yaml",
)

_serials = itertools.count(1)


def hosts_for(cluster: str, name: str) -> list[str]:
    return [f"spiffe://{cluster}.local/ns/istio-system/sa/{name}", f"istiod.{cluster}.svc"]


# --- certificate authorities ------------------------------------------------------------------


@dataclass(frozen=True)
class TestCA:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey


def _name(cn: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "meshtrust tests"),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )


def make_ca(cn: str, parent: TestCA | None = None, *, days: int = 3650) -> TestCA:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    signer = parent.key if parent else key
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(parent.cert.subject if parent else _name(cn))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            CA_KEY_USAGE,
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(signer.public_key()), False
        )
        .sign(signer, hashes.SHA256())
    )
    return TestCA(cert, key)


def pem(*certs: x509.Certificate) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


@dataclass(frozen=True)
class Hierarchy:
    root: TestCA
    signer: TestCA

    @classmethod
    def make(cls, *, levels: int) -> Hierarchy:
        root = make_ca(f"root {next(_serials)}")
        signer = root if levels == 1 else make_ca("signing intermediate", root)
        return cls(root, signer)

    def secret_data(self) -> dict[str, bytes]:
        above = [] if self.signer is self.root else [self.root.cert]
        return {
            "ca-cert.pem": pem(self.signer.cert),
            "ca-key.pem": self.signer.key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
            "cert-chain.pem": pem(self.signer.cert, *above),
            "root-cert.pem": pem(self.root.cert),
        }


# --- Kubernetes objects -----------------------------------------------------------------------


def secret_body(name: str, namespace: str, data: dict[str, bytes]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace},
        "type": "Opaque",
        "data": {k: base64.b64encode(v).decode() for k, v in data.items()},
    }


def declaration(
    cluster: str,
    name: str,
    *,
    signing_secret: str = SIGNING_SECRET,
    bounce: str | None = None,
    **spec: Any,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "hosts": hosts_for(cluster, name),
        "org": ORG,
        "signingCertificateSecret": {"name": signing_secret, "namespace": SYSTEM_NAMESPACE},
        "issuedCertificateSecret": {"name": "cacerts", "namespace": "istio-system"},
        "certOptions": {"keyAlgorithm": "ECDSA", "keySize": 256, "ttlDays": 30},
    }
    if bounce is not None:
        body["podBounceDirective"] = {"name": bounce, "namespace": "istio-system"}
    body.update(spec)
    return {
        "apiVersion": "certificates.smh.solo.io/v1alpha2",
        "kind": "IssuedCertificate",
        "metadata": {"name": name, "namespace": cluster},
        "spec": body,
    }


def directive(cluster: str, name: str) -> dict[str, Any]:
    return {
        "apiVersion": "certificates.smh.solo.io/v1alpha2",
        "kind": "PodBounceDirective",
        "metadata": {"name": name, "namespace": cluster},
        "spec": {"podsToBounce": [{"namespace": "istio-system", "labels": {"app": "istiod"}}]},
    }


# --- agents played by test code ---------------------------------------------------------------


@dataclass
class Agent:
    """An agent of one cluster: a key per issuance, CSRs published through shared/bus."""

    bus: Bus
    cluster: str
    keys: dict[str, ec.EllipticCurvePrivateKey] = field(default_factory=dict)

    def csr_for(
        self,
        decl: dict[str, Any],
        *,
        key: Any = None,
        hosts: list[str] | None = None,
        org: str | None = None,
    ) -> str:
        spec = decl["spec"]
        key = key if key is not None else ec.generate_private_key(ec.SECP256R1())
        return build_csr(
            key,
            org=org if org is not None else spec["org"],
            name=decl["metadata"]["name"],
            hosts=hosts if hosts is not None else spec["hosts"],
        ).decode()

    def request(
        self,
        decl: dict[str, Any],
        *,
        csr_pem: str | None = None,
        issuance: str | None = None,
        attempt: int = 1,
        generation: int | None = None,
        uid: str | None = None,
        name: str | None = None,
    ) -> CsrRequested:
        meta = decl["metadata"]
        issuance = issuance or new_issuance_id()
        if csr_pem is None:
            key = ec.generate_private_key(ec.SECP256R1())
            self.keys[issuance] = key
            csr_pem = self.csr_for(decl, key=key)
        return CsrRequested(
            source=f"agent/{self.cluster}",
            cluster=self.cluster,
            issuance=issuance,
            data=CsrRequestedData(
                name=name or meta["name"],
                declaration_uid=uid or meta.get("uid") or "no-uid",
                declaration_generation=generation or meta.get("generation") or 1,
                csr_pem=csr_pem,
                attempt=attempt,
            ),
        )

    async def send(self, event: CsrRequested) -> CsrRequested:
        await self.bus.publish(event)
        return event

    async def finished(
        self, request: CsrRequested, issued: CertificateIssued, *, generation: int = 1
    ) -> None:
        """Report the issuance of `request` FINISHED with its certificate, as the agent does."""
        await self.bus.publish(
            StatusChanged(
                source=f"agent/{self.cluster}",
                cluster=self.cluster,
                issuance=request.issuance,
                data=StatusChangedData(
                    name=request.data.name,
                    namespace="istio-system",
                    state=CertificateState.FINISHED,
                    observed_generation=generation,
                    declaration_generation=generation,
                    serial_number=issued.data.serial_number,
                    not_after=issued.data.not_after,
                ),
            )
        )


@dataclass
class Answers:
    """Every certificate.issued / certificate.denied on the bus, by issuance."""

    by_issuance: dict[str, list[CertificateIssued | CertificateDenied]] = field(
        default_factory=lambda: defaultdict(list)
    )

    async def __call__(self, event: Event, delivery: Delivery) -> None:
        assert isinstance(event, CertificateIssued | CertificateDenied)
        self.by_issuance[event.issuance].append(event)

    def count(self) -> int:
        return sum(len(v) for v in self.by_issuance.values())

    async def one(
        self, issuance: str, *, within: float = 15.0
    ) -> CertificateIssued | CertificateDenied:
        await eventually(
            lambda: self.by_issuance.get(issuance),
            within=within,
            message=f"an answer for {issuance}",
        )
        return self.by_issuance[issuance][0]

    async def issued(self, issuance: str) -> CertificateIssued:
        answer = await self.one(issuance)
        assert isinstance(answer, CertificateIssued), answer
        return answer

    async def denied(self, issuance: str) -> CertificateDenied:
        answer = await self.one(issuance)
        assert isinstance(answer, CertificateDenied), answer
        return answer


# --- the world --------------------------------------------------------------------------------


@dataclass
class World:
    kube: KubeClient
    kubeconfig: Path
    nats: NatsSettings
    bus: Bus
    answers: Answers
    hierarchy: Hierarchy
    api: Any = None
    """The emulated management cluster (`devstack.kubeapi.KubeAPI`: its faults)."""

    def settings(self, instance: str = "issuer-a", **overrides: Any) -> IssuerSettings:
        options: dict[str, Any] = {
            "instance": instance,
            "nats": self.nats,
            "kube": KubeSettings(kubeconfig=self.kubeconfig),
            "health": HealthSettings(host="127.0.0.1", port=0),
            "excluded_namespaces": (*DEFAULT_EXCLUDED_NAMESPACES, SYSTEM_NAMESPACE),
            "signing_namespace": SYSTEM_NAMESPACE,
            "fetch_timeout": 0.2,
            "grace": 5.0,
            # Tests of signing send hundreds of CSRs per cluster; the quota has tests of its own.
            "issuance_burst": 10_000,
        }
        options.update(overrides)
        return IssuerSettings(**options)

    def agent(self, cluster: str) -> Agent:
        return Agent(self.bus, cluster)

    async def create(self, body: dict[str, Any]) -> dict[str, Any]:
        resource = {
            "IssuedCertificate": ISSUED_CERTIFICATES,
            "PodBounceDirective": POD_BOUNCE_DIRECTIVES,
            "Secret": SECRETS,
        }[body["kind"]]
        return await self.kube.create(resource, body)

    async def grant_secrets_everywhere(self) -> None:
        """What the permissive mode (no signing namespaces) needs besides the setting: deploy/'s
        Role meshtrust-issuer-signing as a ClusterRole, bound cluster-wide (docs/deploy.md)."""
        path = DEPLOY / "management" / "issuer-rbac.yaml"
        for doc in yaml.safe_load_all(path.read_text()):
            if doc["kind"] in ("Role", "RoleBinding"):
                kind = f"Cluster{doc['kind']}"
                del doc["metadata"]["namespace"]
                doc["kind"] = kind
                doc.get("roleRef", {})["kind"] = "ClusterRole"
                await self.kube.create(KINDS[kind], doc)

    async def put_signing_secret(self, hierarchy: Hierarchy, name: str = SIGNING_SECRET) -> None:
        body = secret_body(name, SYSTEM_NAMESPACE, hierarchy.secret_data())
        try:
            current = await self.kube.get(SECRETS, name, namespace=SYSTEM_NAMESPACE)
        except KubeError:
            await self.kube.create(SECRETS, body)
            return
        body["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
        await self.kube.replace(SECRETS, body)


async def install_crds(kube: KubeClient) -> None:
    for doc in crd_documents():
        await kube.create(CUSTOM_RESOURCE_DEFINITIONS, doc)

    async def served() -> bool:
        try:
            await kube.list(ISSUED_CERTIFICATES, namespace="default", limit=1)
            await kube.list(POD_BOUNCE_DIRECTIVES, namespace="default", limit=1)
        except KubeError:
            return False
        return True

    await eventually(served, message="the CRDs to be served")


@asynccontextmanager
async def world(tmp_path: Path, nats: NatsSettings, *, levels: int = 2) -> AsyncIterator[World]:
    from devstack.kubeapi import KubeAPI

    async with KubeAPI(name="mgmt", tls=True, authorization="RBAC") as api:
        admin = api.write_kubeconfig(tmp_path / "mgmt.kubeconfig")
        async with (
            KubeClient.from_kubeconfig(admin) as kube,
            Bus.connect(nats) as bus,
        ):
            await install_crds(kube)
            # The issuer runs as its ServiceAccount, bound by deploy/'s RBAC (meshtrust-system
            # comes with it); the tests' own client `kube` is the cluster-admin.
            await apply(kube, MGMT_MANIFESTS)
            kubeconfig = write_kubeconfig(
                tmp_path / "mgmt-issuer.kubeconfig", await kubeconfig_of(api, "issuer")
            )
            for namespace in CLUSTERS:
                await kube.create(
                    NAMESPACES,
                    {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}},
                )
            await bus.provision()
            hierarchy = Hierarchy.make(levels=levels)
            answers = Answers()
            the_world = World(kube, kubeconfig, nats, bus, answers, hierarchy, api)
            await the_world.put_signing_secret(hierarchy)
            collector = bus.consumer(
                ConsumerSettings(
                    durable="test-answers",
                    filter_subjects=("meshtrust.v1.*.certificate.*",),
                    fetch_timeout=0.2,
                    record_completed=False,
                ),
                answers,
            )
            stop = asyncio.Event()
            async with asyncio.TaskGroup() as group:
                group.create_task(collector.run(stop), name="answers")
                try:
                    yield the_world
                finally:
                    stop.set()


@asynccontextmanager
async def running(*settings: IssuerSettings) -> AsyncIterator[None]:
    """Run one issuer replica per settings for the body; stop them all at the end."""
    stop = asyncio.Event()
    async with asyncio.TaskGroup() as group:
        for one in settings:
            group.create_task(serve(one, stop=stop, handle_signals=False), name=one.instance)
        try:
            yield
        finally:
            stop.set()
