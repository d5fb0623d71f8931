"""The issuance flow end to end: the agent against a real nats-server and the emulator, the
issuer's and the bouncer's sides played by test code."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import aiohttp
from agent.agent_testing import (
    AgentProcess,
    Audit,
    FakeBouncer,
    FakeIssuer,
    bundle_of,
    get_secret,
    ic_body,
    ic_status,
    openssl_verify,
    state_of,
    utcnow,
    wait_status,
)
from k8s.harness import eventually

from services.agent.objects import key_secret_name
from services.agent.settings import AgentSettings
from shared.bus import Bus
from shared.k8s.client import KubeClient
from shared.k8s.resources import EVENTS, ISSUED_CERTIFICATES, NAMESPACES, POD_BOUNCE_DIRECTIVES
from shared.pki import check_bundle, serial_hex


async def finished(kube: KubeClient, namespace: str, name: str) -> bool:
    return await state_of(kube, namespace, name) == "FINISHED"


async def test_an_issued_certificate_goes_to_finished_with_a_valid_bundle(
    kube: KubeClient,
    namespace: str,
    agent: AgentProcess,
    issuer: FakeIssuer,
    audit: Audit,
    tmp_path: Path,
) -> None:
    body = ic_body("istio-ca", namespace)
    await kube.create(ISSUED_CERTIFICATES, body)
    await eventually(lambda: finished(kube, namespace, "istio-ca"), within=20, message="FINISHED")

    status = await ic_status(kube, namespace, "istio-ca")
    assert status["observedGeneration"] == 1
    assert status["error"] == ""
    data = await get_secret(kube, namespace, "istio-ca-cacerts")
    assert data is not None
    bundle = bundle_of(data)
    info = check_bundle(bundle, hosts=body["spec"]["hosts"], org="meshtrust", now=utcnow())
    assert status["serialNumber"] == serial_hex(info.serial)
    assert openssl_verify(bundle, tmp_path).returncode == 0
    assert await get_secret(kube, namespace, key_secret_name("istio-ca")) is None
    assert len(issuer.requests) == 1
    await eventually(
        lambda: audit.states("istio-ca") == ["REQUESTED", "ISSUED", "FINISHED"],
        message="status.changed for every transition",
    )
    events = await kube.list(EVENTS, namespace=namespace)
    reasons = [e["reason"] for e in events.items if e["involvedObject"]["name"] == "istio-ca"]
    assert reasons == ["Requested", "Issued", "Finished"]


async def test_a_pod_bounce_directive_is_bounced_before_finished(
    kube: KubeClient, namespace: str, agent: AgentProcess, bouncer: FakeBouncer, audit: Audit
) -> None:
    await kube.create(
        POD_BOUNCE_DIRECTIVES,
        {
            "apiVersion": "certificates.smh.solo.io/v1alpha2",
            "kind": "PodBounceDirective",
            "metadata": {"name": "istiod", "namespace": namespace},
            "spec": {"podsToBounce": [{"namespace": namespace, "labels": {"app": "istiod"}}]},
        },
    )
    # RSA-4096, the default key: generated off the event loop.
    body = ic_body("istio-ca", namespace, bounce="istiod", keyAlgorithm="RSA", keySize=4096)
    await kube.create(ISSUED_CERTIFICATES, body)
    await eventually(lambda: finished(kube, namespace, "istio-ca"), within=30, message="FINISHED")
    data = await get_secret(kube, namespace, "istio-ca-cacerts")
    assert data is not None
    check_bundle(bundle_of(data), hosts=body["spec"]["hosts"], org="meshtrust", now=utcnow())
    assert len(bouncer.requests) == 1
    request = bouncer.requests[0]
    assert (request.data.directive.namespace, request.data.directive.name) == (namespace, "istiod")
    assert request.data.issued_certificate.name == "istio-ca"
    await eventually(
        lambda: audit.states("istio-ca") == ["REQUESTED", "ISSUED", "FINISHED"],
        message="status.changed for every transition",
    )


async def test_a_failed_bounce_fails_with_the_bouncers_error(
    kube: KubeClient, namespace: str, agent: AgentProcess, bouncer: FakeBouncer
) -> None:
    bouncer.error = "istiod did not become ready within 300 s"
    await kube.create(ISSUED_CERTIFICATES, ic_body("istio-ca", namespace, bounce="istiod"))

    status = await wait_status(
        kube, namespace, "istio-ca", lambda s: s.get("state") == "FAILED", message="FAILED"
    )
    assert "istiod did not become ready within 300 s" in status["error"]
    assert status["failedAttempts"] >= 1


async def test_no_private_key_reaches_the_bus(
    kube: KubeClient, namespace: str, agent: AgentProcess, bus: Bus
) -> None:
    await kube.create(ISSUED_CERTIFICATES, ic_body("istio-ca", namespace))
    await eventually(lambda: finished(kube, namespace, "istio-ca"), within=20, message="FINISHED")
    info = await bus.connection.js.stream_info(bus.settings.stream)
    assert info.state.messages > 0
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        message = await bus.connection.js.get_msg(bus.settings.stream, seq)
        assert b"PRIVATE KEY" not in (message.data or b"")


async def test_readiness_reports_ready_once_caches_and_desired_state_are_synced(
    agent: AgentProcess,
) -> None:
    await eventually(lambda: agent.agent is not None and agent.agent.ready(), message="ready")
    assert agent.agent is not None
    health = agent.agent.health
    await eventually(lambda: health.port is not None, message="health endpoint up")
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{health.port}/readyz") as response,
    ):
        assert response.status == 200


async def test_only_the_namespaces_watched_are_handled(
    kube: KubeClient,
    namespace: str,
    others: None,
    make_settings: Callable[..., AgentSettings],
) -> None:
    elsewhere = f"{namespace}-other"
    await kube.create(
        NAMESPACES, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": elsewhere}}
    )
    process = AgentProcess(make_settings(namespaces=(namespace,)))
    await process.start()
    try:
        await kube.create(ISSUED_CERTIFICATES, ic_body("outside", elsewhere))
        await kube.create(ISSUED_CERTIFICATES, ic_body("inside", namespace))
        await eventually(lambda: finished(kube, namespace, "inside"), within=20)
    finally:
        await process.stop()
    assert await state_of(kube, elsewhere, "outside") is None
