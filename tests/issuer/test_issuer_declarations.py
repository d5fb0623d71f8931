"""Declarations: the desired-state bucket follows the management cluster's objects."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from structlog.testing import capture_logs

from issuer.issuer_testing import (
    SYSTEM_NAMESPACE,
    Hierarchy,
    World,
    declaration,
    directive,
    running,
    secret_body,
    world,
)
from shared.api.v1alpha2 import IssuedCertificate
from shared.bus import Bucket, NatsSettings
from shared.events import DesiredKind, DesiredObject
from shared.k8s.resources import ISSUED_CERTIFICATES, POD_BOUNCE_DIRECTIVES
from support.waiting import eventually


async def desired(w: World) -> Bucket:
    return await w.bus.bucket("meshtrust-desired")


async def value_of(bucket: Bucket, key: str) -> DesiredObject | None:
    entry = await bucket.get(key)
    return None if entry is None else DesiredObject.model_validate_json(entry.value)


def chain_fingerprint(h: Hierarchy) -> str:
    chain = [h.signer.cert] if h.signer is h.root else [h.signer.cert, h.root.cert]
    digest = hashlib.sha256()
    for cert in chain:
        digest.update(hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).digest())
    return digest.hexdigest()


async def status_of(w: World, cluster: str, name: str) -> IssuedCertificate:
    return IssuedCertificate.from_object(
        await w.kube.get(ISSUED_CERTIFICATES, name, namespace=cluster)
    )


async def test_a_declaration_created_changed_and_deleted_is_followed_by_the_bucket(
    tmp_path: Path, nats_settings: NatsSettings
) -> None:
    async with world(tmp_path, nats_settings) as w, running(w.settings()):
        bucket = await desired(w)
        key = "east.issuedcertificates.istio-ca"
        created = await w.create(declaration("east", "istio-ca"))

        value = await eventually(lambda: value_of(bucket, key), message="the key to appear")
        assert value.cluster == "east"
        assert value.kind is DesiredKind.ISSUED_CERTIFICATE
        assert value.name == "istio-ca"
        assert value.namespace == "istio-system"  # where the agent applies it
        assert value.uid == created["metadata"]["uid"]
        assert value.generation == 1
        assert value.spec == created["spec"]
        assert value.signing_chain_fingerprint == chain_fingerprint(w.hierarchy)

        changed = {**created, "spec": {**created["spec"], "hosts": ["spiffe://east.local/x"]}}
        await w.kube.replace(ISSUED_CERTIFICATES, changed)

        async def generation_two() -> DesiredObject | None:
            current = await value_of(bucket, key)
            return current if current is not None and current.generation == 2 else None

        value = await eventually(generation_two, message="generation 2 to be published")
        assert value.spec["hosts"] == ["spiffe://east.local/x"]

        await w.kube.delete(ISSUED_CERTIFICATES, "istio-ca", namespace="east")

        async def gone() -> bool:
            return await bucket.get(key) is None

        await eventually(gone, message="the key to be deleted")


async def test_a_directive_is_published_where_its_certificate_names_it(
    tmp_path: Path, nats_settings: NatsSettings
) -> None:
    async with world(tmp_path, nats_settings) as w, running(w.settings()):
        bucket = await desired(w)
        key = "east.podbouncedirectives.istiod-bounce"
        pbd = await w.create(directive("east", "istiod-bounce"))
        await w.create(declaration("east", "istio-ca", bounce="istiod-bounce"))

        value = await eventually(lambda: value_of(bucket, key), message="the directive's key")
        assert value.kind is DesiredKind.POD_BOUNCE_DIRECTIVE
        assert value.namespace == "istio-system"
        assert value.uid == pbd["metadata"]["uid"]
        assert value.spec == pbd["spec"]
        assert value.signing_chain_fingerprint is None

        await w.kube.delete(POD_BOUNCE_DIRECTIVES, "istiod-bounce", namespace="east")

        async def gone() -> bool:
            return await bucket.get(key) is None

        await eventually(gone, message="the directive's key to be deleted")


async def test_a_missing_signing_secret_fails_the_declaration_and_publishes_nothing(
    tmp_path: Path, nats_settings: NatsSettings
) -> None:
    async with world(tmp_path, nats_settings) as w, running(w.settings()):
        bucket = await desired(w)
        await w.create(declaration("east", "orphan", signing_secret="later"))
        await w.create(secret_body("junk", SYSTEM_NAMESPACE, {"tls.crt": b"x", "tls.key": b"y"}))
        await w.create(declaration("east", "junk-signed", signing_secret="junk"))

        async def failed(name: str) -> IssuedCertificate | None:
            ic = await status_of(w, "east", name)
            return ic if ic.status.state.value == "FAILED" else None

        orphan = await eventually(lambda: failed("orphan"), message="orphan to be FAILED")
        assert orphan.status.error.startswith("issuer: signingCertificateSecret")
        assert "meshtrust-system/later does not exist" in orphan.status.error
        junk = await eventually(lambda: failed("junk-signed"), message="junk-signed FAILED")
        assert "meshtrust-system/junk cannot sign" in junk.status.error
        assert await bucket.get("east.issuedcertificates.orphan") is None
        assert await bucket.get("east.issuedcertificates.junk-signed") is None

        # Once the Secret exists, the error is cleared and the declaration published.
        await w.put_signing_secret(w.hierarchy, name="later")
        await eventually(
            lambda: value_of(bucket, "east.issuedcertificates.orphan"), message="publication"
        )

        async def cleared() -> bool:
            ic = await status_of(w, "east", "orphan")
            return ic.status.state.value == "PENDING" and ic.status.error == ""

        await eventually(cleared, message="the issuer's error to be cleared")


async def test_a_rotated_signing_secret_republishes_every_declaration_that_uses_it(
    tmp_path: Path, nats_settings: NatsSettings
) -> None:
    async with world(tmp_path, nats_settings) as w, running(w.settings()):
        bucket = await desired(w)
        keys = ["east.issuedcertificates.a", "west.issuedcertificates.b"]
        await w.create(declaration("east", "a"))
        await w.create(declaration("west", "b"))
        other = Hierarchy.make(levels=1)
        await w.put_signing_secret(other, name="other-ca")
        await w.create(declaration("east", "c", signing_secret="other-ca"))
        for key in [*keys, "east.issuedcertificates.c"]:
            await eventually(lambda key=key: value_of(bucket, key), message=key)
        before = {key: await bucket.get(key) for key in keys}
        c_before = await bucket.get("east.issuedcertificates.c")

        rotated = Hierarchy.make(levels=2)
        await w.put_signing_secret(rotated)

        async def republished() -> bool:
            values = [await value_of(bucket, key) for key in keys]
            return all(
                v is not None and v.signing_chain_fingerprint == chain_fingerprint(rotated)
                for v in values
            )

        await eventually(republished, message="both declarations to carry the new CA")
        for key in keys:
            value = await value_of(bucket, key)
            assert value is not None
            assert value.generation == 1  # the declaration itself did not change
            entry = await bucket.get(key)
            assert entry is not None
            assert entry.revision != before[key].revision  # type: ignore[union-attr]
        c_after = await bucket.get("east.issuedcertificates.c")
        assert c_after is not None
        assert c_before is not None
        assert c_after.revision == c_before.revision  # another CA: untouched

        # A CSR after the rotation is signed by the new CA.
        decl = await w.kube.get(ISSUED_CERTIFICATES, "a", namespace="east")
        agent = w.agent("east")
        request = await agent.send(agent.request(decl))
        answer = await w.answers.issued(request.issuance)
        assert answer.data.root_cert_pem.encode() == rotated.root.cert.public_bytes(
            serialization.Encoding.PEM
        )


async def test_keys_of_declarations_deleted_while_no_issuer_ran_are_swept(
    tmp_path: Path, nats_settings: NatsSettings
) -> None:
    async with world(tmp_path, nats_settings) as w:
        bucket = await desired(w)
        stale = DesiredObject(
            cluster="east",
            kind=DesiredKind.ISSUED_CERTIFICATE,
            name="long-gone",
            namespace="istio-system",
            uid="u-gone",
            generation=3,
            spec={},
        )
        await bucket.put("east.issuedcertificates.long-gone", stale.model_dump_json().encode())
        async with running(w.settings()):

            async def swept() -> bool:
                return await bucket.get("east.issuedcertificates.long-gone") is None

            await eventually(swept, message="the orphaned key to be swept")


async def test_objects_outside_cluster_namespaces_are_not_published(
    tmp_path: Path, nats_settings: NatsSettings
) -> None:
    async with world(tmp_path, nats_settings) as w, running(w.settings()):
        bucket = await desired(w)
        await w.create(declaration("default", "not-a-cluster"))
        await w.create(declaration("east", "marker"))
        await eventually(lambda: value_of(bucket, "east.issuedcertificates.marker"))
        assert await bucket.keys() == ["east.issuedcertificates.marker"]


async def test_two_replicas_publish_one_consistent_value(
    tmp_path: Path, nats_settings: NatsSettings
) -> None:
    async with (
        world(tmp_path, nats_settings) as w,
        running(w.settings("issuer-a"), w.settings("issuer-b")),
    ):
        bucket = await desired(w)
        created = await w.create(declaration("east", "shared"))
        current: dict[str, Any] = created
        for n in range(2, 6):
            current = await w.kube.replace(
                ISSUED_CERTIFICATES,
                {**current, "spec": {**current["spec"], "hosts": [f"spiffe://east.local/{n}"]}},
            )

        async def at_five() -> bool:
            value = await value_of(bucket, "east.issuedcertificates.shared")
            return value is not None and value.generation == 5

        await eventually(at_five, message="generation 5 published")
        value = await value_of(bucket, "east.issuedcertificates.shared")
        assert value is not None
        assert value.spec["hosts"] == ["spiffe://east.local/5"]


async def test_a_declaration_the_issuer_cannot_read_is_failed_and_not_published(
    tmp_path: Path, nats_settings: NatsSettings
) -> None:
    # The CRD's CEL rule (keySize fits keyAlgorithm) is not run by the emulator, as on a cluster
    # without CEL: the object is stored, and the issuer's model refuses it.
    async with world(tmp_path, nats_settings) as w, running(w.settings()):
        bucket = await desired(w)
        body = declaration("east", "odd", certOptions={"keyAlgorithm": "ECDSA", "keySize": 4096})
        await w.create(body)

        async def failed() -> IssuedCertificate | None:
            raw = await w.kube.get(ISSUED_CERTIFICATES, "odd", namespace="east")
            status = raw.get("status") or {}
            return raw if status.get("state") == "FAILED" else None  # type: ignore[return-value]

        raw: Any = await eventually(failed, message="the unreadable declaration to be FAILED")
        assert raw["status"]["error"].startswith("issuer: the declaration cannot be read")
        assert "certOptions" in raw["status"]["error"]
        assert await bucket.get("east.issuedcertificates.odd") is None

        agent = w.agent("east")
        request = await agent.send(agent.request(raw, csr_pem=agent.csr_for(raw)))
        answer = await w.answers.denied(request.issuance)
        assert answer.data.reason == "InvalidDeclaration"


async def test_an_unreadable_desired_value_is_replaced_by_the_declared_one(
    tmp_path: Path, nats_settings: NatsSettings
) -> None:
    async with world(tmp_path, nats_settings) as w:
        bucket = await desired(w)
        await w.create(declaration("east", "istio-ca"))
        key = "east.issuedcertificates.istio-ca"
        # what a reply-subject injection stored there: a PubAck, not a DesiredObject
        await bucket.put(key, b'{"stream":"MESHTRUST","seq":7}')
        with capture_logs() as logs:
            async with running(w.settings()):

                async def repaired() -> DesiredObject | None:
                    entry = await bucket.get(key)
                    if entry is None or entry.value.startswith(b'{"stream"'):
                        return None
                    return DesiredObject.model_validate_json(entry.value)

                value = await eventually(repaired, message="the junk value replaced")
        assert value is not None
        assert (value.cluster, value.name, value.generation) == ("east", "istio-ca", 1)
        unreadable = [e for e in logs if e["event"] == "desired entry unreadable; replacing it"]
        assert unreadable
        assert unreadable[0]["reason"] == "SchemaMismatch"
