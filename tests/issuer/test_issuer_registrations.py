"""Cluster registrations over the real stack (a nats-server, the API emulator, the issuer as it
runs): a declaration outside its cluster's ClusterRegistration is FAILED and never published,
and its CSRs are denied, with the rule and the registration named; the registration's quota
and name constraints apply to what is signed."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from issuer.issuer_testing import (
    SYSTEM_NAMESPACE,
    Hierarchy,
    World,
    declaration,
    running,
    world,
)
from issuer.registration_testing import register, registration_body
from issuer.test_issuer_signing import declared, ledger_entries
from issuer.test_issuer_signing_scope import failed
from services.issuer.handlers import CsrHandler
from services.issuer.issued import ISSUED_BUCKET
from services.issuer.ledger import open_ledger
from services.issuer.registrations import CLUSTER_REGISTRATIONS, Registrations
from services.issuer.signer import SigningCAs
from shared.bus import Delivery, NatsSettings
from shared.events import DESIRED_BUCKET, CertificateDenied, CertificateIssued
from shared.k8s import KubeError
from shared.k8s.resources import ISSUED_CERTIFICATES
from shared.runtime import TransientError
from support.waiting import eventually

OPENSSL = shutil.which("openssl")


async def refused(w: World, name: str, reason: str, rule: str) -> None:
    """East's declaration `name` is FAILED naming `rule` and east's registration, is not
    published, and a CSR for it is denied `reason`."""
    ic = await eventually(lambda: failed(w, "east", name), message=f"{name} FAILED")
    assert ic.status.error.startswith("issuer: ")
    assert rule in ic.status.error
    assert "ClusterRegistration meshtrust-system/east" in ic.status.error
    bucket = await w.bus.bucket(DESIRED_BUCKET)
    assert await bucket.get(f"east.issuedcertificates.{name}") is None
    agent = w.agent("east")
    body = await w.kube.get(
        ISSUED_CERTIFICATES,
        name,
        namespace="east",
    )
    answer = await w.answers.denied((await agent.send(agent.request(body))).issuance)
    assert answer.data.reason == reason
    assert rule in answer.data.message


async def test_declarations_outside_the_registration_are_failed_and_their_csrs_denied(
    tmp_path: Path, nats_settings: NatsSettings
) -> None:
    async with world(tmp_path, nats_settings) as w:
        # A second CA in the signing namespace: in scope, but not one east may use.
        await w.put_signing_secret(Hierarchy.make(levels=1), name="other-ca")
        await register(w.kube, "east")
        async with running(w.settings()):
            await w.create(
                declaration(
                    "east",
                    "foreign-ca",
                    signingCertificateSecret={"name": "other-ca", "namespace": SYSTEM_NAMESPACE},
                )
            )
            await w.create(
                declaration(
                    "east", "west-names", hosts=["spiffe://west.local/ns/istio-system/sa/x"]
                )
            )
            await w.create(declaration("east", "google", hosts=["www.google.com"]))
            await w.create(
                declaration(
                    "east",
                    "long",
                    certOptions={"keyAlgorithm": "ECDSA", "keySize": 256, "ttlDays": 365},
                )
            )
            inside = await declared(w, declaration("east", "istio-ca"))
            await refused(
                w,
                "foreign-ca",
                "SigningCANotRegistered",
                "signingCertificateSecret meshtrust-system/other-ca is not among the CAs",
            )
            await refused(w, "west-names", "HostNotRegistered", "matches none of the host patterns")
            await refused(w, "google", "HostNotRegistered", "hosts[0] 'www.google.com' is outside")
            await refused(w, "long", "TTLAboveRegistration", "allows at most 90 days")
            agent = w.agent("east")
            await w.answers.issued((await agent.send(agent.request(inside))).issuance)
        entries = await ledger_entries(w)
        assert [e["name"] for e in entries] == ["istio-ca"]


async def test_a_registration_made_or_narrowed_later_fails_what_it_no_longer_allows(
    tmp_path: Path, nats_settings: NatsSettings
) -> None:
    async with world(tmp_path, nats_settings) as w, running(w.settings()):
        await declared(w, declaration("east", "istio-ca"))  # no registration: permissive
        await register(w.kube, "east", hosts=["spiffe://east.local/ns/other/sa/*"])
        ic = await eventually(lambda: failed(w, "east", "istio-ca"), message="FAILED")
        assert "hosts[0] 'spiffe://east.local/ns/istio-system/sa/istio-ca' is outside" in (
            ic.status.error
        )
        # Widened again: the error is cleared and the declaration served.
        current = await w.kube.get(CLUSTER_REGISTRATIONS, "east", namespace=SYSTEM_NAMESPACE)
        body = registration_body("east")
        body["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
        await w.kube.replace(CLUSTER_REGISTRATIONS, body)

        async def served() -> bool:
            ic = await w.kube.get(
                ISSUED_CERTIFICATES,
                "istio-ca",
                namespace="east",
            )
            return (ic.get("status") or {}).get("state") != "FAILED"

        await eventually(served, message="the failure cleared")


async def test_a_missing_registration_fails_when_registrations_are_required(
    tmp_path: Path, nats_settings: NatsSettings
) -> None:
    async with world(tmp_path, nats_settings) as w:
        await register(w.kube, "east")
        async with running(w.settings(require_registration=True)):
            await declared(w, declaration("east", "istio-ca"))
            await w.create(declaration("west", "istio-ca"))
            ic = await eventually(lambda: failed(w, "west", "istio-ca"), message="west FAILED")
            assert "cluster west has no ClusterRegistration meshtrust-system/west" in (
                ic.status.error
            )
            assert "MESHTRUST_ISSUER_REQUIRE_REGISTRATION" in ic.status.error


async def test_the_registration_quota_overrides_the_issuers_default(
    tmp_path: Path, nats_settings: NatsSettings
) -> None:
    async with world(tmp_path, nats_settings) as w:
        # The issuer's default here is 10,000 at once; east's registration allows 2, then 1 an hour.
        await register(w.kube, "east", issuance={"perHour": 1, "burst": 2})
        # The API server validates registrations with the CRD's schema: a zero rate is refused.
        with pytest.raises(KubeError) as invalid:
            await register(w.kube, "west", issuance={"perHour": 0, "burst": 1})
        assert invalid.value.code == 422
        async with running(w.settings()):
            east_decl = await declared(w, declaration("east", "istio-ca"))
            west_decl = await declared(w, declaration("west", "istio-ca"))
            east, west = w.agent("east"), w.agent("west")
            asked = [await east.send(east.request(east_decl)) for _ in range(4)]
            west_asked = [await west.send(west.request(west_decl)) for _ in range(4)]
            answers = [await w.answers.one(r.issuance) for r in asked]
            issued = [a for a in answers if isinstance(a, CertificateIssued)]
            denied = [a for a in answers if isinstance(a, CertificateDenied)]
            assert (len(issued), len(denied)) == (2, 2)
            for answer in denied:
                assert answer.data.reason == "RateLimited"
                assert "(2 at once, then 1 an hour, its ClusterRegistration's)" in (
                    answer.data.message
                )
            for request in west_asked:  # west has no registration: the default bucket
                await w.answers.issued(request.issuance)


def _leaf(issuer_cert: x509.Certificate, issuer_key: Any, name: x509.GeneralName) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "workload")]))
        .issuer_name(issuer_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName([name]), critical=False)
        .sign(issuer_key, hashes.SHA256())
    )
    return certificate.public_bytes(serialization.Encoding.PEM)


def _openssl_verify(tmp_path: Path, answer: CertificateIssued, leaf: bytes) -> bool:
    assert OPENSSL is not None, "openssl must be installed for these tests"
    (tmp_path / "root.pem").write_text(answer.data.root_cert_pem)
    (tmp_path / "untrusted.pem").write_text(answer.data.certificate_pem + answer.data.ca_chain_pem)
    (tmp_path / "leaf.pem").write_bytes(leaf)
    result = subprocess.run(
        [
            OPENSSL,
            "verify",
            "-CAfile",
            str(tmp_path / "root.pem"),
            "-untrusted",
            str(tmp_path / "untrusted.pem"),
            str(tmp_path / "leaf.pem"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if result.returncode != 0:
        assert "permitted subtree violation" in result.stdout + result.stderr, result
    return result.returncode == 0


async def test_the_issued_intermediate_carries_the_registrations_name_constraints(
    tmp_path: Path, nats_settings: NatsSettings
) -> None:
    async with world(tmp_path, nats_settings) as w:
        await register(w.kube, "east")
        async with running(w.settings()):
            body = await declared(w, declaration("east", "istio-ca"))
            west_body = await declared(w, declaration("west", "istio-ca"))
            agent, west = w.agent("east"), w.agent("west")
            request = await agent.send(agent.request(body))
            answer = await w.answers.issued(request.issuance)
            west_answer = await w.answers.issued(
                (await west.send(west.request(west_body))).issuance
            )
        intermediate = x509.load_pem_x509_certificate(answer.data.certificate_pem.encode())
        constraints = intermediate.extensions.get_extension_for_class(x509.NameConstraints)
        assert constraints.critical
        assert constraints.value.permitted_subtrees == [
            x509.UniformResourceIdentifier("east.local"),
            x509.DNSName("east.svc"),
        ]
        key = agent.keys[request.issuance]
        east_id = x509.UniformResourceIdentifier("spiffe://east.local/ns/default/sa/web")
        west_id = x509.UniformResourceIdentifier("spiffe://west.local/ns/default/sa/web")
        assert _openssl_verify(tmp_path, answer, _leaf(intermediate, key, east_id))
        assert not _openssl_verify(tmp_path, answer, _leaf(intermediate, key, west_id))
        assert not _openssl_verify(
            tmp_path, answer, _leaf(intermediate, key, x509.DNSName("api.west.svc"))
        )
        # West has no registration: its intermediate is unconstrained, as before.
        west_cert = x509.load_pem_x509_certificate(west_answer.data.certificate_pem.encode())
        assert x509.NameConstraints not in [type(e.value) for e in west_cert.extensions]


async def test_no_csr_is_answered_before_the_registrations_are_listed(
    tmp_path: Path, nats_settings: NatsSettings
) -> None:
    """Before its first list the cache would show a registered cluster as unregistered (the
    permissive mode): the CSR is left for redelivery (a transient error: nak), not signed."""
    async with world(tmp_path, nats_settings) as w:
        await register(w.kube, "east", hosts=["spiffe://east.local/ns/other/sa/*"])
        body = await w.create(declaration("east", "istio-ca"))
        settings = w.settings()
        ledger = open_ledger(w.bus)
        await ledger.ensure()
        registrations = Registrations(w.kube, settings)  # never run: never listed
        with ThreadPoolExecutor(max_workers=1) as executor:
            handler = CsrHandler(
                settings=settings,
                bus=w.bus,
                kube=w.kube,
                issued=await w.bus.bucket(ISSUED_BUCKET, history=1),
                ledger=ledger,
                executor=executor,
                signing_cas=SigningCAs(),
                registrations=registrations,
            )
            request = w.agent("east").request(body)
            delivery = Delivery(subject="", stream_sequence=1, num_delivered=1)
            with pytest.raises(TransientError, match="ClusterRegistrations are not listed yet"):
                await handler(request, delivery)
            # Listed: the same CSR is now judged by the registration.
            task = asyncio.create_task(registrations.informer.run())
            try:
                await registrations.informer.wait_synced()
                await handler(request, delivery)
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        answer = await w.answers.denied(request.issuance)
        assert answer.data.reason == "HostNotRegistered"
        assert await ledger_entries(w) == []
