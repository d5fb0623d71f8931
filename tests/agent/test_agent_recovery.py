"""Restarts, re-sends and re-issuance: the agent finishes what it started, with one key per
issuance, and repairs an issued Secret that went missing or was tampered with."""

from __future__ import annotations

import base64
from collections.abc import Callable

from agent.agent_testing import (
    AgentProcess,
    FakeIssuer,
    get_secret,
    ic_body,
    ic_status,
    state_of,
)
from k8s.harness import eventually

from services.agent.objects import key_secret_name
from services.agent.settings import AgentSettings
from shared.k8s.client import KubeClient
from shared.k8s.resources import ISSUED_CERTIFICATES, SECRETS
from shared.pki import KeyAlgorithm, KeySpec, generate_private_key, private_key_to_pem


async def finished(kube: KubeClient, namespace: str, name: str) -> bool:
    return await state_of(kube, namespace, name) == "FINISHED"


async def test_an_agent_killed_in_requested_resends_the_same_csr_and_completes(
    kube: KubeClient,
    namespace: str,
    others: None,
    issuer: FakeIssuer,
    make_settings: Callable[..., AgentSettings],
) -> None:
    issuer.mode = "silent"
    process = AgentProcess(make_settings(resend_after=2.0))
    await process.start()
    await kube.create(ISSUED_CERTIFICATES, ic_body("istio-ca", namespace))
    await eventually(lambda: len(issuer.requests) == 1, message="the first CSR")
    assert await state_of(kube, namespace, "istio-ca") == "REQUESTED"
    key_before = await get_secret(kube, namespace, key_secret_name("istio-ca"))
    assert key_before is not None
    issuance = (await ic_status(kube, namespace, "istio-ca"))["issuanceId"]

    await process.kill()
    issuer.mode = "sign"
    await process.start()
    try:
        await eventually(lambda: finished(kube, namespace, "istio-ca"), within=20)
    finally:
        await process.stop()

    assert process.starts == 2
    status = await ic_status(kube, namespace, "istio-ca")
    assert status["issuanceId"] == issuance
    assert {r.issuance for r in issuer.requests} == {issuance}
    assert {r.data.csr_pem.encode() for r in issuer.requests} == {key_before["csr.pem"]}
    assert len(issuer.requests) >= 2  # the restart re-sent it (as a new attempt after 2 s)
    issued = await get_secret(kube, namespace, "istio-ca-cacerts")
    assert issued is not None
    assert issued["ca-key.pem"] == key_before["tls.key"]


async def test_a_csr_without_answer_is_sent_again_as_a_new_attempt(
    kube: KubeClient,
    namespace: str,
    others: None,
    issuer: FakeIssuer,
    make_settings: Callable[..., AgentSettings],
) -> None:
    issuer.mode = "silent"
    process = AgentProcess(make_settings(resend_after=0.5))
    await process.start()
    try:
        await kube.create(ISSUED_CERTIFICATES, ic_body("istio-ca", namespace))
        await eventually(lambda: len(issuer.requests) >= 3, within=10, message="re-sends")
    finally:
        await process.stop()
    attempts = [r.data.attempt for r in issuer.requests]
    assert attempts[:3] == [1, 2, 3]
    assert len({r.data.csr_pem for r in issuer.requests}) == 1
    assert len({r.issuance for r in issuer.requests}) == 1


async def reissued(kube: KubeClient, namespace: str, serial: str) -> bool:
    status = await ic_status(kube, namespace, "istio-ca")
    return status.get("state") == "FINISHED" and status.get("serialNumber") != serial


async def test_a_deleted_issued_secret_is_issued_again(
    kube: KubeClient, namespace: str, agent: AgentProcess, issuer: FakeIssuer
) -> None:
    await kube.create(ISSUED_CERTIFICATES, ic_body("istio-ca", namespace))
    await eventually(lambda: finished(kube, namespace, "istio-ca"), within=20)
    serial = (await ic_status(kube, namespace, "istio-ca"))["serialNumber"]

    await kube.delete(SECRETS, "istio-ca-cacerts", namespace=namespace)
    await eventually(lambda: reissued(kube, namespace, serial), within=20, message="re-issued")
    assert await get_secret(kube, namespace, "istio-ca-cacerts") is not None
    assert len(issuer.requests) == 2


async def test_a_replaced_ca_key_is_issued_again_with_a_fresh_key(
    kube: KubeClient, namespace: str, agent: AgentProcess
) -> None:
    await kube.create(ISSUED_CERTIFICATES, ic_body("istio-ca", namespace))
    await eventually(lambda: finished(kube, namespace, "istio-ca"), within=20)
    serial = (await ic_status(kube, namespace, "istio-ca"))["serialNumber"]
    foreign = private_key_to_pem(
        generate_private_key(KeySpec(algorithm=KeyAlgorithm.ECDSA, size=256))
    )

    await kube.patch_merge(
        SECRETS,
        "istio-ca-cacerts",
        {"data": {"ca-key.pem": base64.b64encode(foreign).decode()}},
        namespace=namespace,
    )
    await eventually(lambda: reissued(kube, namespace, serial), within=20, message="re-issued")
    data = await get_secret(kube, namespace, "istio-ca-cacerts")
    assert data is not None
    assert data["ca-key.pem"] != foreign


async def test_a_spec_change_is_issued_again_and_observed_generation_follows(
    kube: KubeClient, namespace: str, agent: AgentProcess, issuer: FakeIssuer
) -> None:
    await kube.create(ISSUED_CERTIFICATES, ic_body("istio-ca", namespace))
    await eventually(lambda: finished(kube, namespace, "istio-ca"), within=20)
    serial = (await ic_status(kube, namespace, "istio-ca"))["serialNumber"]
    hosts = [f"spiffe://cluster.local/ns/{namespace}/sa/istio-ca", "istiod.example.com"]

    await kube.patch_merge(
        ISSUED_CERTIFICATES, "istio-ca", {"spec": {"hosts": hosts}}, namespace=namespace
    )
    await eventually(lambda: reissued(kube, namespace, serial), within=20, message="re-issued")
    status = await ic_status(kube, namespace, "istio-ca")
    assert status["observedGeneration"] == 2
    assert issuer.requests[-1].data.declaration_generation >= 1
    assert len({r.issuance for r in issuer.requests}) == 2


async def test_a_key_secret_left_by_a_crash_after_issued_is_deleted(
    kube: KubeClient,
    namespace: str,
    others: None,
    make_settings: Callable[..., AgentSettings],
) -> None:
    """The key Secret is deleted beside the ISSUED write; a crash between the two leaves it
    behind, and the next pass (here: after a restart) deletes it."""
    process = AgentProcess(make_settings())
    await process.start()
    try:
        await kube.create(ISSUED_CERTIFICATES, ic_body("istio-ca", namespace))
        await eventually(lambda: finished(kube, namespace, "istio-ca"), within=20)
        await process.kill()
        status = await ic_status(kube, namespace, "istio-ca")
        issued = await get_secret(kube, namespace, "istio-ca-cacerts")
        assert issued is not None
        owner = await kube.get(ISSUED_CERTIFICATES, "istio-ca", namespace=namespace)
        left = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {
                "name": key_secret_name("istio-ca"),
                "namespace": namespace,
                "labels": {"app.kubernetes.io/managed-by": "meshtrust"},
                "annotations": {
                    "meshtrust.io/issuance-id": status["issuanceId"],
                    "meshtrust.io/issued-certificate": f"{namespace}/istio-ca",
                    "meshtrust.io/generation": "1",
                    "meshtrust.io/attempt": "1",
                },
                "ownerReferences": [
                    {
                        "apiVersion": owner["apiVersion"],
                        "kind": "IssuedCertificate",
                        "name": "istio-ca",
                        "uid": owner["metadata"]["uid"],
                    }
                ],
            },
            "data": {
                "tls.key": base64.b64encode(issued["ca-key.pem"]).decode(),
                "csr.pem": base64.b64encode(b"-----BEGIN CERTIFICATE REQUEST-----").decode(),
            },
        }
        await kube.create(SECRETS, left)
        await process.start()

        async def deleted() -> bool:
            return await get_secret(kube, namespace, key_secret_name("istio-ca")) is None

        await eventually(deleted, within=20, message="the spent key Secret deleted")
        assert await state_of(kube, namespace, "istio-ca") == "FINISHED"
        after = await ic_status(kube, namespace, "istio-ca")
        assert after["issuanceId"] == status["issuanceId"]  # no new issuance for it
    finally:
        await process.stop()
