"""A rotation's new CA and the clusters' ClusterRegistrations: a cluster may be signed only by a
CA Secret its registration allows (`signingCertificateSecrets`), during a rotation as outside.
The controller pauses a rotation whose new CA some member's registration does not allow
(before moving anyone), and the signing path denies a CSR of a step signed by the new CA when
the registration does not allow it (a registration edited mid-rotation). Pure rules as tables,
then over a real nats-server and the emulated management cluster."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from issuer.issuer_testing import SYSTEM_NAMESPACE, World, declaration, running, world
from issuer.test_rotation_controller import (
    NEW_SECRET,
    epoch_in_desired,
    issue_and_finish,
    rotation_body,
    rotation_of,
)
from issuer.test_rotation_selector import new_root
from services.issuer.policies import RegistrationState
from services.issuer.registrations import CLUSTER_REGISTRATIONS
from services.issuer.rotating import CERTIFICATE_ROTATIONS
from services.issuer.rotation import new_ca_refused
from shared.api.registrations import ClusterRegistration
from shared.api.rotations import CertificateRotation
from shared.bus import NatsSettings
from shared.controller.policy import Finding
from support.waiting import eventually

OLD = {"namespace": SYSTEM_NAMESPACE, "name": "root-ca"}
NEW = {"namespace": SYSTEM_NAMESPACE, "name": NEW_SECRET}


def registration(cluster: str, *allowed: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "certificates.smh.solo.io/v1alpha2",
        "kind": "ClusterRegistration",
        "metadata": {"name": cluster, "namespace": SYSTEM_NAMESPACE},
        "spec": {"signingCertificateSecrets": list(allowed)},
    }


def state(*allowed: dict[str, str]) -> ClusterRegistration:
    return ClusterRegistration.from_object(registration("x", *allowed))


def in_phase(phase: str, **spec: Any) -> CertificateRotation:
    return CertificateRotation.from_object(rotation_body(**spec) | {"status": {"phase": phase}})


@pytest.mark.parametrize(
    ("phase", "spec", "registrations", "refused"),
    [
        ("Pending", {}, {"east": state(OLD, NEW)}, None),
        ("Pending", {}, {"east": state()}, None),  # no list: any CA of the signing namespaces
        ("Pending", {}, {"east": None}, None),  # no registration, none required
        ("Pending", {}, {"east": state(OLD), "west": state(OLD, NEW)}, "east"),
        ("AddingNewRoot", {}, {"west": state(OLD), "east": state(OLD)}, "east, west"),
        ("DeletingOldRoot", {}, {"east": state(OLD)}, "east"),
        ("Reissuing", {}, {"east": state(OLD)}, "east"),
        ("RollingBack", {}, {"east": state(OLD)}, None),  # the way back signs with the old CA
        ("AddingNewRoot", {"abort": True}, {"east": state(OLD)}, None),
        ("Succeeded", {}, {"east": state(OLD)}, None),
    ],
)
def test_which_rotations_a_registration_holds_back(
    phase: str, spec: dict[str, Any], registrations: dict[str, RegistrationState], refused: str
) -> None:
    found = new_ca_refused(in_phase(phase, **spec), registrations)
    if refused is None:
        assert found is None
        return
    assert found is not None
    assert found.reason == "SigningCANotRegistered"
    assert found.message.startswith(f"{refused}: the rotation's new CA Secret {SYSTEM_NAMESPACE}/")
    assert "signingCertificateSecrets" in found.message


def test_an_unreadable_registration_holds_it_back_with_its_own_reason() -> None:
    broken = Finding("RegistrationInvalid", "ClusterRegistration meshtrust-system/east: ...")
    found = new_ca_refused(in_phase("Pending"), {"east": broken})
    assert found is not None
    assert found.reason == "RegistrationInvalid"
    assert found.message.startswith("east: ClusterRegistration")


async def set_allowed(w: World, cluster: str, *allowed: dict[str, str]) -> None:
    raw = await w.kube.get(CLUSTER_REGISTRATIONS, cluster, namespace=SYSTEM_NAMESPACE)
    raw["spec"]["signingCertificateSecrets"] = list(allowed)
    await w.kube.replace(CLUSTER_REGISTRATIONS, raw)


async def test_a_new_ca_the_registration_does_not_allow_pauses_the_rotation_and_is_refused(
    tmp_path: Path, nats_settings: NatsSettings
) -> None:
    async with world(tmp_path, nats_settings, levels=1) as w:
        await new_root(w)
        east = await w.create(declaration("east", "istiod"))
        await w.kube.create(CLUSTER_REGISTRATIONS, registration("east", OLD))
        async with running(w.settings()):
            await w.kube.create(CERTIFICATE_ROTATIONS, rotation_body())

            async def paused() -> str | None:
                status = (await rotation_of(w)).status
                return status.error if status.paused else None

            error = await eventually(paused, message="the rotation to pause")
            assert error.startswith("SigningCANotRegistered: east: the rotation's new CA Secret")
            assert [p.step for p in (await rotation_of(w)).status.clusters] == []
            # Allowed: the rotation goes on, east's add step (signed by the old CA) first.
            await set_allowed(w, "east", OLD, NEW)
            await issue_and_finish(w, east, await epoch_in_desired(w, ".add"))
            move = await epoch_in_desired(w, ".move")
            # Taken back before east asks for its move step (signed by the new CA): refused.
            await set_allowed(w, "east", OLD)
            await eventually(paused, message="the issuer to see the registration changed")
            agent = w.agent("east")
            request = agent.request(east)
            request = request.model_copy(
                update={"data": request.data.model_copy(update={"trust_epoch": move})}
            )
            await agent.send(request)
            answer = await w.answers.denied(request.issuance)
            assert answer.data.reason == "SigningCANotRegistered"
            assert f"{SYSTEM_NAMESPACE}/{NEW_SECRET}" in answer.data.message
