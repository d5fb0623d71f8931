"""The rotation controller over a real nats-server and the emulated management cluster.

The issuer runs as in production (its composition, deploy/'s RBAC); the agent of `east` is
played by test code: it reads its desired state, sends a CSR with the epoch it finds there, and
reports the certificate FINISHED, as `status.changed` from the agent's identity.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from issuer.issuer_testing import (
    SYSTEM_NAMESPACE,
    Hierarchy,
    World,
    declaration,
    make_ca,
    pem,
    running,
    secret_body,
    world,
)
from services.issuer.rotating import CERTIFICATE_ROTATIONS
from services.issuer.steps import CROSS_SIGNED_FIELD
from shared.api.rotations import CertificateRotation, Phase
from shared.bus import NatsSettings
from shared.events import (
    CertificateIssued,
    CertificateState,
    DesiredObject,
    StatusChanged,
    StatusChangedData,
)
from shared.k8s.resources import SECRETS
from shared.pki import cross_sign, load_signing_ca, vouched_roots
from support.waiting import eventually

NEW_SECRET = "root-ca-2027"


def rotation_body(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "certificates.smh.solo.io/v1alpha2",
        "kind": "CertificateRotation",
        "metadata": {"name": "to-2027", "namespace": SYSTEM_NAMESPACE},
        "spec": {
            "signingCertificateSecret": {"name": "root-ca", "namespace": SYSTEM_NAMESPACE},
            "newSigningCertificateSecret": {"name": NEW_SECRET, "namespace": SYSTEM_NAMESPACE},
            "gracePeriod": "0s",
            **spec,
        },
    }


async def rotation_of(w: World) -> CertificateRotation:
    raw = await w.kube.get(CERTIFICATE_ROTATIONS, "to-2027", namespace=SYSTEM_NAMESPACE)
    return CertificateRotation.from_object(raw)


async def epoch_in_desired(w: World, suffix: str, cluster: str = "east") -> str:
    bucket = await w.bus.bucket("meshtrust-desired")

    async def epoch() -> str | None:
        entry = await bucket.get(f"{cluster}.issuedcertificates.istiod")
        if entry is None:
            return None
        value = DesiredObject.model_validate_json(entry.value)
        return value.trust_epoch if (value.trust_epoch or "").endswith(suffix) else None

    return await eventually(epoch, within=20, message=f"the desired epoch *{suffix}")


async def issue_and_finish(w: World, decl: dict[str, Any], epoch: str) -> CertificateIssued:
    """The agent's part of one step: CSR with the epoch, then FINISHED with the serial."""
    cluster = decl["metadata"]["namespace"]
    agent = w.agent(cluster)
    request = agent.request(decl)
    request = request.model_copy(
        update={"data": request.data.model_copy(update={"trust_epoch": epoch})}
    )
    await agent.send(request)
    issued = await w.answers.issued(request.issuance)
    await agent.finished(request, issued)
    return issued


def subjects(pem: str) -> list[x509.Name]:
    return [c.subject for c in x509.load_pem_x509_certificates(pem.encode())]


def vouched_by_old(issued: CertificateIssued, old: Hierarchy) -> bool:
    roots = x509.load_pem_x509_certificates(issued.data.root_cert_pem.encode())
    crosses = x509.load_pem_x509_certificates((issued.data.cross_signed_pem or "").encode())
    now = dt.datetime.now(dt.UTC)
    return not vouched_roots(roots, pinned=[old.root.cert], cross_signed=crosses, now=now).untrusted


def chain_root(issued: CertificateIssued) -> x509.Name:
    return x509.load_pem_x509_certificates(issued.data.ca_chain_pem.encode())[-1].subject


async def test_a_root_rotation_of_one_cluster_runs_every_phase_with_the_steps_signing(
    tmp_path: Path, nats_settings: NatsSettings
) -> None:
    async with world(tmp_path, nats_settings, levels=1) as w:
        old, new = w.hierarchy, Hierarchy.make(levels=1)
        await w.kube.create(SECRETS, secret_body(NEW_SECRET, SYSTEM_NAMESPACE, new.secret_data()))
        decl = await w.create(declaration("east", "istiod"))
        async with running(w.settings()):
            await w.kube.create(CERTIFICATE_ROTATIONS, rotation_body())
            old_name, new_name = old.root.cert.subject, new.root.cert.subject

            add = await issue_and_finish(w, decl, await epoch_in_desired(w, ".add"))
            assert chain_root(add) == old_name
            assert subjects(add.data.root_cert_pem) == [old_name, new_name]
            assert vouched_by_old(add, old)

            move = await issue_and_finish(w, decl, await epoch_in_desired(w, ".move"))
            assert chain_root(move) == new_name
            assert subjects(move.data.root_cert_pem) == [old_name, new_name]
            assert vouched_by_old(move, old)

            drop = await issue_and_finish(w, decl, await epoch_in_desired(w, ".drop"))
            assert chain_root(drop) == new_name
            assert subjects(drop.data.root_cert_pem) == [new_name]
            assert vouched_by_old(drop, old)

            async def succeeded() -> CertificateRotation | None:
                rotation = await rotation_of(w)
                return rotation if rotation.status.phase is Phase.SUCCEEDED else None

            done = await eventually(succeeded, within=20, message="the rotation to succeed")
            assert done.status.completion_time is not None
            assert done.status.clusters[0].serial_number == drop.data.serial_number
            assert done.status.observed_generation == 1
            assert done.status.old_root_fingerprint != done.status.new_root_fingerprint


async def test_a_failed_cluster_pauses_the_rotation_and_abort_rolls_it_back(
    tmp_path: Path, nats_settings: NatsSettings
) -> None:
    async with world(tmp_path, nats_settings, levels=1) as w:
        new = Hierarchy.make(levels=1)
        await w.kube.create(SECRETS, secret_body(NEW_SECRET, SYSTEM_NAMESPACE, new.secret_data()))
        decl = await w.create(declaration("east", "istiod"))
        async with running(w.settings()):
            await w.kube.create(CERTIFICATE_ROTATIONS, rotation_body())
            epoch = await epoch_in_desired(w, ".add")
            await w.bus.publish(
                StatusChanged(
                    source="agent/east",
                    cluster="east",
                    issuance="issuance-failed-1",
                    data=StatusChangedData(
                        name="istiod",
                        namespace="istio-system",
                        state=CertificateState.FAILED,
                        error="UntrustedRoot: nothing pinned vouches for the new root",
                        observed_generation=1,
                        declaration_generation=1,
                    ),
                )
            )

            async def paused() -> CertificateRotation | None:
                rotation = await rotation_of(w)
                return rotation if rotation.status.paused else None

            stopped = await eventually(paused, within=20, message="the rotation to pause")
            assert "UntrustedRoot" in (stopped.status.error or "")
            raw = await w.kube.get(CERTIFICATE_ROTATIONS, "to-2027", namespace=SYSTEM_NAMESPACE)
            raw["spec"]["abort"] = True
            await w.kube.replace(CERTIFICATE_ROTATIONS, raw)
            undo = await epoch_in_desired(w, ".undo")
            assert undo.rsplit(".", 1)[0] == epoch.rsplit(".", 1)[0]
            rolled = await issue_and_finish(w, decl, undo)
            assert subjects(rolled.data.root_cert_pem) == [w.hierarchy.root.cert.subject]
            assert rolled.data.cross_signed_pem is None

            async def rolled_back() -> bool:
                return (await rotation_of(w)).status.phase is Phase.ROLLED_BACK

            await eventually(rolled_back, within=20, message="the rotation to roll back")


async def rotation_ended(w: World) -> CertificateRotation:
    async def ended() -> CertificateRotation | None:
        rotation = await rotation_of(w)
        return rotation if rotation.status.phase is Phase.SUCCEEDED else None

    return await eventually(ended, within=20, message="the rotation to succeed")


async def test_an_intermediate_only_rotation_reissues_in_waves_the_canary_first(
    tmp_path: Path, nats_settings: NatsSettings
) -> None:
    async with world(tmp_path, nats_settings, levels=2) as w:
        root = w.hierarchy.root
        new = Hierarchy(root, make_ca("next intermediate", root))
        await w.kube.create(SECRETS, secret_body(NEW_SECRET, SYSTEM_NAMESPACE, new.secret_data()))
        east = await w.create(declaration("east", "istiod"))
        west = await w.create(declaration("west", "istiod"))
        async with running(w.settings()):
            await w.kube.create(CERTIFICATE_ROTATIONS, rotation_body(canary="west"))
            first = await issue_and_finish(w, west, await epoch_in_desired(w, ".reissue", "west"))
            assert (await rotation_of(w)).status.phase is Phase.REISSUING
            bucket = await w.bus.bucket("meshtrust-desired")
            entry = await bucket.get("east.issuedcertificates.istiod")
            assert entry is not None
            assert DesiredObject.model_validate_json(entry.value).trust_epoch is None, (
                "east waits for the canary"
            )
            second = await issue_and_finish(w, east, await epoch_in_desired(w, ".reissue"))
            for issued in (first, second):
                chain = x509.load_pem_x509_certificates(issued.data.ca_chain_pem.encode())
                assert chain[0] == new.signer.cert
                assert subjects(issued.data.root_cert_pem) == [root.cert.subject]
                assert issued.data.cross_signed_pem is None
            done = await rotation_ended(w)
            assert done.status.old_root_fingerprint == done.status.new_root_fingerprint


async def test_an_intermediate_old_ca_rotates_to_a_new_root_with_the_given_cross_certificate(
    tmp_path: Path, nats_settings: NatsSettings
) -> None:
    async with world(tmp_path, nats_settings, levels=2) as w:
        old, new = w.hierarchy, Hierarchy.make(levels=1)
        old_root = load_signing_ca(
            {
                "ca-cert.pem": pem(old.root.cert),
                "ca-key.pem": old.root.key.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                ),
                "root-cert.pem": pem(old.root.cert),
            },
            now=dt.datetime.now(dt.UTC),
        )
        cross = cross_sign(new.root.cert, by=old_root, now=dt.datetime.now(dt.UTC))
        data = {**new.secret_data(), CROSS_SIGNED_FIELD: pem(cross)}
        await w.kube.create(SECRETS, secret_body(NEW_SECRET, SYSTEM_NAMESPACE, data))
        decl = await w.create(declaration("east", "istiod"))
        async with running(w.settings()):
            await w.kube.create(CERTIFICATE_ROTATIONS, rotation_body())
            add = await issue_and_finish(w, decl, await epoch_in_desired(w, ".add"))
            assert x509.load_pem_x509_certificates(add.data.ca_chain_pem.encode())[0] == (
                old.signer.cert
            )
            assert x509.load_pem_x509_certificate((add.data.cross_signed_pem or "").encode()) == (
                cross
            )
            assert vouched_by_old(add, old)


async def test_a_rollback_from_phase_two_goes_back_then_undoes(
    tmp_path: Path, nats_settings: NatsSettings
) -> None:
    async with world(tmp_path, nats_settings, levels=1) as w:
        old, new = w.hierarchy, Hierarchy.make(levels=1)
        await w.kube.create(SECRETS, secret_body(NEW_SECRET, SYSTEM_NAMESPACE, new.secret_data()))
        decl = await w.create(declaration("east", "istiod"))
        async with running(w.settings()):
            await w.kube.create(CERTIFICATE_ROTATIONS, rotation_body(approval="Manual"))
            await issue_and_finish(w, decl, await epoch_in_desired(w, ".add"))
            raw = await w.kube.get(CERTIFICATE_ROTATIONS, "to-2027", namespace=SYSTEM_NAMESPACE)
            raw["spec"]["approvedPhase"] = "PropagatingNewIntermediate"
            await w.kube.replace(CERTIFICATE_ROTATIONS, raw)
            moved = await issue_and_finish(w, decl, await epoch_in_desired(w, ".move"))
            assert chain_root(moved) == new.root.cert.subject

            raw = await w.kube.get(CERTIFICATE_ROTATIONS, "to-2027", namespace=SYSTEM_NAMESPACE)
            raw["spec"]["abort"] = True
            await w.kube.replace(CERTIFICATE_ROTATIONS, raw)
            back = await issue_and_finish(w, decl, await epoch_in_desired(w, ".back"))
            assert chain_root(back) == old.root.cert.subject
            assert subjects(back.data.root_cert_pem) == [
                old.root.cert.subject,
                new.root.cert.subject,
            ]
            assert vouched_by_old(back, old)
            undo = await issue_and_finish(w, decl, await epoch_in_desired(w, ".undo"))
            assert subjects(undo.data.root_cert_pem) == [old.root.cert.subject]

            async def rolled_back() -> bool:
                return (await rotation_of(w)).status.phase is Phase.ROLLED_BACK

            await eventually(rolled_back, within=20, message="the rotation to roll back")
            # The epoch stays `undo` (no further re-issue), signed as without a rotation.
            again = await issue_and_finish(w, decl, await epoch_in_desired(w, ".undo"))
            assert chain_root(again) == old.root.cert.subject
            assert subjects(again.data.root_cert_pem) == [old.root.cert.subject]
