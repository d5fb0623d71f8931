"""Signing: authorised CSRs are signed and chain to the signing CA; everything else is denied
with its own reason; malformed events are terminated and the issuer keeps serving."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from nats.js.api import DiscardPolicy
from structlog.testing import capture_logs

from issuer.issuer_testing import (
    SYSTEM_NAMESPACE,
    Agent,
    Hierarchy,
    World,
    declaration,
    hosts_for,
    running,
    secret_body,
    world,
)
from services.issuer.handlers import CsrHandler
from services.issuer.issued import ISSUED_BUCKET, IssuedRecord
from services.issuer.ledger import open_ledger
from services.issuer.signer import SigningCAs
from shared.api.meta import ObjectKey
from shared.bus import Delivery, KvEntry, NatsSettings
from shared.bus.ledger import Ledger
from shared.events import CertificateIssued, CsrRequested, encode
from shared.k8s import KubeClient
from shared.k8s.informer import Informer
from shared.k8s.resources import ISSUED_CERTIFICATES
from shared.pki import Bundle, check_bundle, private_key_to_pem, serial_hex
from shared.runtime.clock import utcnow
from support.waiting import eventually


async def declared(w: World, body: dict[str, Any]) -> dict[str, Any]:
    """Create a declaration and wait until the issuer has published it (it is then known)."""
    created = await w.create(body)
    meta = created["metadata"]
    key = f"{meta['namespace']}.issuedcertificates.{meta['name']}"
    desired = await w.bus.bucket("meshtrust-desired")
    await eventually(lambda: desired.get(key), message=f"{key} to be published")
    return created


async def ledger_entries(w: World) -> list[dict[str, Any]]:
    ledger = Ledger(w.bus.connection, stream="MESHTRUST_LEDGER", subjects=("meshtrust.ledger.>",))
    return [json.loads(entry.data) async for entry in ledger.read()]


@pytest.mark.parametrize("levels", [1, 2], ids=["signed by a root", "signed by an intermediate"])
async def test_a_valid_csr_is_issued_and_chains_to_the_signing_ca(
    tmp_path: Path, nats_settings: NatsSettings, levels: int
) -> None:
    async with world(tmp_path, nats_settings, levels=levels) as w, running(w.settings()):
        decl = await declared(w, declaration("east", "istio-ca"))
        agent = w.agent("east")
        request = await agent.send(agent.request(decl))

        answer = await w.answers.issued(request.issuance)

        data = answer.data
        assert answer.cluster == "east"
        assert answer.source == "issuer/issuer-a"
        assert (data.name, data.declaration_generation, data.attempt) == ("istio-ca", 1, 1)
        key_pem = private_key_to_pem(agent.keys[request.issuance])
        bundle = Bundle(
            ca_cert_pem=data.certificate_pem.encode(),
            ca_key_pem=key_pem,
            cert_chain_pem=(data.certificate_pem + data.ca_chain_pem).encode(),
            root_cert_pem=data.root_cert_pem.encode(),
        )
        info = check_bundle(
            bundle, hosts=hosts_for("east", "istio-ca"), org="meshtrust tests", now=utcnow()
        )
        cert = x509.load_pem_x509_certificate(data.certificate_pem.encode())
        cert.verify_directly_issued_by(w.hierarchy.signer.cert)
        assert data.root_cert_pem.encode() == w.hierarchy.root.cert.public_bytes(
            serialization.Encoding.PEM
        )
        assert serial_hex(info.serial) == data.serial_number
        # certOptions.ttlDays = 30, well under the issuer's maximum
        assert dt.timedelta(days=29) < data.not_after - data.not_before <= dt.timedelta(days=31)

        entries = await eventually(lambda: ledger_entries(w))
        assert len(entries) == 1
        entry = entries[0]
        assert entry["serial_number"] == data.serial_number
        assert (entry["cluster"], entry["name"], entry["issuance"]) == (
            "east",
            "istio-ca",
            request.issuance,
        )
        assert entry["hosts"] == hosts_for("east", "istio-ca")
        assert entry["csr_public_key_fingerprint"] == info.public_key_fingerprint
        assert entry["certificate_fingerprint"] == info.fingerprint


async def test_the_ttl_is_clamped_by_the_issuer_wide_maximum(
    tmp_path: Path, nats_settings: NatsSettings
) -> None:
    settings_overrides = {"max_ttl": dt.timedelta(days=2)}
    async with world(tmp_path, nats_settings) as w, running(w.settings(**settings_overrides)):
        decl = await declared(w, declaration("east", "long-lived"))
        request = await w.agent("east").send(w.agent("east").request(decl))
        data = (await w.answers.issued(request.issuance)).data
        # notBefore is backdated 5 minutes; notAfter is two days after signing
        assert data.not_after - data.not_before == dt.timedelta(days=2, minutes=5)


def _bad_signature(csr_pem: str) -> str:
    """The same CSR with its signature altered: still decodable, no longer valid."""
    der = bytearray(
        x509.load_pem_x509_csr(csr_pem.encode()).public_bytes(serialization.Encoding.DER)
    )
    der[-1] ^= 0x01
    return x509.load_der_x509_csr(bytes(der)).public_bytes(serialization.Encoding.PEM).decode()


async def test_each_bad_request_is_denied_with_its_own_reason(
    tmp_path: Path, nats_settings: NatsSettings
) -> None:
    async with world(tmp_path, nats_settings) as w, running(w.settings()):
        east, west = w.agent("east"), w.agent("west")
        ca = await declared(w, declaration("east", "istio-ca"))
        bumped = await declared(w, declaration("east", "bumped"))
        bumped_spec = {**bumped, "spec": {**bumped["spec"], "org": "meshtrust tests"}}
        bumped_spec["spec"]["certOptions"] = {**bumped["spec"]["certOptions"], "ttlDays": 10}
        bumped = await w.kube.replace(ISSUED_CERTIFICATES, bumped_spec)
        assert bumped["metadata"]["generation"] == 2
        no_secret = await w.create(declaration("east", "no-secret", signing_secret="absent"))
        await w.create(secret_body("garbage", SYSTEM_NAMESPACE, {"ca-cert.pem": b"nope"}))
        bad_secret = await w.create(declaration("east", "bad-secret", signing_secret="garbage"))
        weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505

        cases: dict[str, tuple[CsrRequested, str]] = {
            "a CSR on west's subject for a declaration only east has": (
                west.request(ca, csr_pem=east.csr_for(ca)),
                "NoDeclaration",
            ),
            "a CSR for hosts other than the declared ones": (
                east.request(ca, csr_pem=east.csr_for(ca, hosts=["spiffe://evil/ns/x/sa/y"])),
                "HostsMismatch",
            ),
            "a CSR for another org": (
                east.request(ca, csr_pem=east.csr_for(ca, org="someone else")),
                "OrgMismatch",
            ),
            "a CSR whose signature does not verify": (
                east.request(ca, csr_pem=_bad_signature(east.csr_for(ca))),
                "BadSignature",
            ),
            "a CSR with a weak key": (
                east.request(ca, csr_pem=east.csr_for(ca, key=weak)),
                "WeakKey",
            ),
            "a CSR for a declaration nobody made": (
                east.request(ca, name="nobody"),
                "NoDeclaration",
            ),
            "a CSR answering a superseded generation": (
                east.request(bumped, generation=1),
                "SupersededGeneration",
            ),
            "a CSR for a declaration re-created since (another uid)": (
                east.request(ca, uid="0a0a0a0a-old-uid"),
                "DeclarationReplaced",
            ),
            "a CSR whose declaration's signing Secret is missing": (
                east.request(no_secret),
                "SigningSecretMissing",
            ),
            "a CSR whose declaration's signing Secret is invalid": (
                east.request(bad_secret),
                "SigningSecretInvalid",
            ),
            "a CSR that is no CSR": (east.request(ca, csr_pem="not a CSR"), "Malformed"),
        }
        for request, _ in cases.values():
            await w.bus.publish(request)

        for sentence, (request, reason) in cases.items():
            answer = await w.answers.one(request.issuance)
            assert answer.type.value == "certificate.denied", sentence
            assert answer.data.reason == reason, (sentence, answer.data.message)  # type: ignore[union-attr]
            assert answer.cluster == request.cluster, sentence
            assert answer.data.message, sentence  # type: ignore[union-attr]
        assert await ledger_entries(w) == []

        # ... and a good one still goes through
        good = await east.send(east.request(ca))
        await w.answers.issued(good.issuance)


async def test_malformed_events_are_terminated_and_the_issuer_keeps_serving(
    tmp_path: Path, nats_settings: NatsSettings
) -> None:
    async with world(tmp_path, nats_settings) as w, running(w.settings()):
        east = w.agent("east")
        ca = await declared(w, declaration("east", "istio-ca"))
        js = w.bus.connection.js
        # east's envelope on west's subject: the codec terminates it (SubjectMismatch)
        spoofed = east.request(ca)
        await js.publish("meshtrust.v1.west.csr.requested", encode(spoofed), stream="MESHTRUST")
        await js.publish("meshtrust.v1.east.csr.requested", b"\xff not json", stream="MESHTRUST")
        await js.publish("meshtrust.v1.east.csr.requested", b'{"type": "csr.requested"}')
        await js.publish("meshtrust.v1.east.csr.requested", b'{"type": "no.such"}')

        good = await east.send(east.request(ca))
        answer = await w.answers.issued(good.issuance)
        assert isinstance(answer, CertificateIssued)

        # Each cluster's CSRs are read through its own durable (docs/issuer.md, "Fairness").
        async def all_handled() -> bool:
            infos = [await js.consumer_info("MESHTRUST", f"csr-{c}") for c in ("east", "west")]
            return all(i.num_pending == 0 and i.num_ack_pending == 0 for i in infos)

        await eventually(all_handled, message="every message acknowledged or terminated")
        for cluster in ("east", "west"):
            info = await js.consumer_info("MESHTRUST", f"csr-{cluster}")
            assert info.num_redelivered == 0
        assert spoofed.issuance not in w.answers.by_issuance
        assert w.answers.count() == 1


def _ecdsa() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


async def test_a_repeated_request_gets_the_same_certificate_not_a_new_serial(
    tmp_path: Path, nats_settings: NatsSettings
) -> None:
    async with world(tmp_path, nats_settings) as w, running(w.settings()):
        east = w.agent("east")
        ca = await declared(w, declaration("east", "istio-ca"))
        first = await east.send(east.request(ca))
        issued = await w.answers.issued(first.issuance)

        # the agent's timed re-send: a new attempt of the same issuance, same CSR
        again = CsrRequested.model_validate(
            {**first.model_dump(), "data": {**first.data.model_dump(), "attempt": 2}}
        )
        await east.send(again)
        await eventually(lambda: len(w.answers.by_issuance[first.issuance]) == 2)
        second = w.answers.by_issuance[first.issuance][1]
        assert isinstance(second, CertificateIssued)
        assert second.data.serial_number == issued.data.serial_number
        assert second.data.certificate_pem == issued.data.certificate_pem
        assert second.data.attempt == 2

        # a redelivery of the very same message (stored twice, as after a lost publish ack)
        await w.bus.connection.js.publish(
            "meshtrust.v1.east.csr.requested",
            encode(first),
            stream="MESHTRUST",
            headers={"Nats-Msg-Id": "another-id"},
        )

        async def all_handled() -> bool:
            info = await w.bus.connection.js.consumer_info("MESHTRUST", "csr-east")
            return info.num_pending == 0 and info.num_ack_pending == 0

        await eventually(all_handled)
        entries = await ledger_entries(w)
        assert [e["serial_number"] for e in entries] == [issued.data.serial_number]

        # the same issuance id for another CSR is refused, not answered with this certificate
        reused = east.request(ca, issuance=first.issuance, csr_pem=east.csr_for(ca, key=_ecdsa()))
        reused = CsrRequested.model_validate(
            {**reused.model_dump(), "data": {**reused.data.model_dump(), "attempt": 3}}
        )
        await east.send(reused)
        await eventually(lambda: len(w.answers.by_issuance[first.issuance]) == 3)
        third = w.answers.by_issuance[first.issuance][2]
        assert third.type.value == "certificate.denied"
        assert third.data.reason == "IssuanceReused"  # type: ignore[union-attr]


__all__ = ["Agent"]


async def test_a_csr_redelivered_after_a_failed_answer_gets_the_same_serial(
    tmp_path: Path, nats_settings: NatsSettings
) -> None:
    """A real redelivery: the answer cannot be stored (the stream is full), the handler naks,
    JetStream redelivers, and the second delivery sends the certificate signed the first time."""
    async with world(tmp_path, nats_settings) as w:
        async with running(w.settings()):  # provisions the issuer's buckets and ledger
            decl = await declared(w, declaration("east", "istio-ca"))
        east = w.agent("east")
        request = await east.send(east.request(decl))

        js = w.bus.connection.js
        info = await js.stream_info("MESHTRUST")
        normal = info.config
        full = dataclasses.replace(normal, max_msgs=info.state.messages, discard=DiscardPolicy.NEW)
        await js.update_stream(full)
        issued = await w.bus.bucket("meshtrust-issued")
        # provisioning off (it would restore the stream), and publishes that give up quickly
        restricted = nats_settings.model_copy(update={"provision": False, "publish_deadline": 0.3})
        async with running(w.settings(nats=restricted)):

            async def recorded() -> KvEntry | None:
                # the entry holds the replica's claim first, then the record of its signature
                entry = await issued.get(f"east.{request.issuance}")
                return entry if entry is not None and b"serial_number" in entry.value else None

            record = await eventually(recorded, message="the signature recorded")

            async def redelivered() -> bool:
                consumer = await js.consumer_info("MESHTRUST", "csr-east")
                return consumer.num_redelivered == 1

            await eventually(redelivered, message="the CSR to be delivered again")
            assert request.issuance not in w.answers.by_issuance
            await js.update_stream(normal)

            answer = await w.answers.issued(request.issuance)
            consumer = await js.consumer_info("MESHTRUST", "csr-east")
            assert consumer.delivered is not None
            assert consumer.delivered.consumer_seq >= 2  # one CSR, delivered more than once
        assert json.loads(record.value)["serial_number"] == answer.data.serial_number
        entries = await ledger_entries(w)
        assert [e["serial_number"] for e in entries] == [answer.data.serial_number]


async def frozen_informer(w: World) -> Informer:
    """The issuer's IssuedCertificate informer, synced once and then stopped: its cache stays
    as it was, whatever the API server holds afterwards."""
    informer = Informer(w.kube, ISSUED_CERTIFICATES)
    watching = asyncio.create_task(informer.run())
    await informer.wait_synced()
    watching.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await watching
    return informer


async def handled_once(
    w: World, request: CsrRequested, *, kube: KubeClient, informer: Informer | None = None
) -> None:
    """`request` handled once by a CsrHandler of its own, talking to the API through `kube`
    (returns normally: the consumer would ack)."""
    ledger = open_ledger(w.bus)
    await ledger.ensure()
    with ThreadPoolExecutor(max_workers=1) as executor:
        handler = CsrHandler(
            settings=w.settings(),
            bus=w.bus,
            kube=kube,
            issued=await w.bus.bucket(ISSUED_BUCKET, history=1),
            ledger=ledger,
            executor=executor,
            signing_cas=SigningCAs(),
            declarations=informer,
        )
        await handler(request, Delivery(subject="", stream_sequence=1, num_delivered=1))


async def signed_by_a_csr_handler(
    w: World, informer: Informer, body: dict[str, Any]
) -> x509.Certificate:
    """The agent's CSR for `body`, handled once by a CsrHandler that guesses from `informer`;
    the certificate it answered with."""
    request = w.agent("east").request(body)
    await handled_once(w, request, kube=w.kube, informer=informer)
    answer = await w.answers.issued(request.issuance)
    return x509.load_pem_x509_certificate(answer.data.certificate_pem.encode())


async def test_a_csr_is_signed_by_the_ca_the_live_declaration_names_not_the_cached_one(
    tmp_path: Path, nats_settings: NatsSettings
) -> None:
    """The handler guesses the signing Secret from its informer's cache to read it beside the
    declaration; when the cache is behind (here: frozen before the declaration was repointed),
    the Secret the live declaration names is the one that signs."""
    async with world(tmp_path, nats_settings, levels=1) as w:
        other = Hierarchy.make(levels=1)
        await w.put_signing_secret(other, name="other-ca")
        decl = await w.create(declaration("east", "istio-ca"))
        informer = await frozen_informer(w)  # its cache names the first signing Secret
        repointed = dict(decl, spec={**decl["spec"], "signingCertificateSecret": {
            "name": "other-ca", "namespace": SYSTEM_NAMESPACE}})  # fmt: skip
        live = await w.kube.replace(ISSUED_CERTIFICATES, repointed)
        cached = informer.get(ObjectKey("east", "istio-ca"))
        assert cached is not None
        assert cached["spec"]["signingCertificateSecret"]["name"] == "root-ca"
        cert = await signed_by_a_csr_handler(w, informer, live)
        cert.verify_directly_issued_by(other.signer.cert)


async def test_a_failed_early_read_of_the_signing_secret_falls_back_to_a_read_of_it(
    tmp_path: Path, nats_settings: NatsSettings
) -> None:
    """The signing Secret the cached declaration names is read beside the declaration; when
    that read fails, the Secret is read again after the declaration, and the CSR is signed."""
    async with world(tmp_path, nats_settings, levels=1) as w:
        decl = await w.create(declaration("east", "istio-ca"))
        informer = await frozen_informer(w)
        w.api.faults.fail_next(1, status=500, path_contains="/secrets/root-ca")
        cert = await signed_by_a_csr_handler(w, informer, decl)
        cert.verify_directly_issued_by(w.hierarchy.signer.cert)


@pytest.mark.parametrize(
    "junk",
    [
        b'{"stream":"MESHTRUST","seq":9}',
        b"[" * 100_000,
        b"\xff\xfe not json",
        b'{"schema_version":1,"cluster":"east"}',
    ],
    ids=["a PubAck", "nested JSON", "invalid UTF-8", "a record missing its fields"],
)
async def test_an_unreadable_issued_record_is_replaced_by_compare_and_set_and_answered(
    tmp_path: Path, nats_settings: NatsSettings, junk: bytes
) -> None:
    async with world(tmp_path, nats_settings) as w, running(w.settings()):
        east = w.agent("east")
        ca = await declared(w, declaration("east", "istio-ca"))
        issued = await w.bus.bucket(ISSUED_BUCKET)
        request = east.request(ca)
        key = f"east.{request.issuance}"
        junk_revision = await issued.put(key, junk)

        with capture_logs() as logs:
            await east.send(request)
            answer = await w.answers.issued(request.issuance)

        entry = await issued.get(key)
        assert entry is not None
        assert entry.revision > junk_revision
        record = IssuedRecord.model_validate_json(entry.value)
        assert record.serial_number == answer.data.serial_number
        assert record.answers(cluster="east", name="istio-ca", csr_pem=request.data.csr_pem)
        events = [e["event"] for e in logs]
        assert "issued record unreadable; treated as absent and replaced" in events
        assert "unreadable issued record replaced" in events
        # the repaired record answers the agent's re-send with the same certificate
        again = CsrRequested.model_validate(
            {**request.model_dump(), "data": {**request.data.model_dump(), "attempt": 2}}
        )
        await east.send(again)
        await eventually(lambda: len(w.answers.by_issuance[request.issuance]) == 2)
        second = w.answers.by_issuance[request.issuance][1]
        assert isinstance(second, CertificateIssued)
        assert second.data.serial_number == answer.data.serial_number
