"""Failures: denials, invalid specs, retries with backoff, and answers that must be ignored."""

from __future__ import annotations

import datetime as dt

from agent.agent_testing import (
    AgentProcess,
    Audit,
    FakeIssuer,
    get_secret,
    ic_body,
    ic_status,
    state_of,
    utcnow,
    wait_status,
)
from k8s.harness import eventually

from services.agent.objects import key_secret_name
from shared.api.v1alpha2 import IssuedCertificate
from shared.bus import Bus
from shared.events import new_issuance_id, subject
from shared.events.enums import EventType
from shared.k8s.client import KubeClient
from shared.k8s.errors import NotFound
from shared.k8s.resources import ISSUED_CERTIFICATES, SECRETS


async def test_a_denied_csr_fails_with_the_issuers_reason_then_retries_with_backoff(
    kube: KubeClient, namespace: str, agent: AgentProcess, issuer: FakeIssuer, audit: Audit
) -> None:
    issuer.mode = "deny"
    await kube.create(ISSUED_CERTIFICATES, ic_body("istio-ca", namespace))

    status = await wait_status(
        kube,
        namespace,
        "istio-ca",
        lambda s: s.get("state") == "FAILED" and s.get("failedAttempts", 0) >= 2,
        message="two failed attempts",
    )
    assert "HostsMismatch" in status["error"]
    assert "hosts differ from the declaration" in status["error"]
    # The failed issuance's key is gone (a retry may have made the next one already).
    key = await kube_secret_annotations(kube, namespace, key_secret_name("istio-ca"))
    assert key is None or key.get("meshtrust.io/issuance-id") != status["issuanceId"]
    # Backoff, not a hot loop: 0.3 s doubling to 1 s leaves room for a handful of attempts.
    assert len(issuer.requests) <= 6

    issuer.mode = "sign"

    async def recovered() -> bool:
        status = await ic_status(kube, namespace, "istio-ca")
        return status.get("state") == "FINISHED"

    await eventually(recovered, within=20, message="FINISHED after the issuer relented")
    status = await ic_status(kube, namespace, "istio-ca")
    assert status["failedAttempts"] == 0
    assert status["error"] == ""
    assert "FAILED" in audit.states("istio-ca")


async def test_a_rate_limited_csr_is_sent_again_at_its_retry_time_and_never_fails(
    kube: KubeClient, namespace: str, agent: AgentProcess, issuer: FakeIssuer, audit: Audit
) -> None:
    # The agent's own re-send is 30 s away: only the retry time can bring the second send.
    issuer.mode = "limit"
    issuer.retry_after = utcnow() + dt.timedelta(seconds=2)
    await kube.create(ISSUED_CERTIFICATES, ic_body("istio-ca", namespace))

    limited = await wait_status(
        kube,
        namespace,
        "istio-ca",
        lambda s: "rate-limited" in s.get("error", ""),
        message="the rate limit reported",
    )
    assert limited["state"] == "REQUESTED"
    assert issuer.retry_after.isoformat() in limited["error"]

    await wait_status(
        kube,
        namespace,
        "istio-ca",
        lambda s: s.get("state") == "FINISHED",
        message="FINISHED after the retry time",
    )
    first, *later = issuer.requests
    assert later, "the CSR was sent again"
    # Not before the retry time; the same issuance (the same key), as its next attempt.
    assert all(at >= issuer.retry_after for at in issuer.received_at[1:])
    assert {r.issuance for r in later} == {first.issuance}
    assert later[0].data.attempt == first.data.attempt + 1
    assert "FAILED" not in audit.states("istio-ca")
    status = await ic_status(kube, namespace, "istio-ca")
    assert status["error"] == ""


async def test_invalid_specs_fail_naming_the_field_and_publish_nothing(
    kube: KubeClient, namespace: str, agent: AgentProcess, issuer: FakeIssuer
) -> None:
    bad_host = ic_body("bad-host", namespace)
    bad_host["spec"]["hosts"] = ["istiod:15012"]
    bad_size = ic_body("bad-size", namespace, keyAlgorithm="RSA", keySize=256)
    await kube.create(ISSUED_CERTIFICATES, bad_host)
    await kube.create(ISSUED_CERTIFICATES, bad_size)

    async def both_failed() -> bool:
        return await state_of(kube, namespace, "bad-host") == "FAILED" and (
            await state_of(kube, namespace, "bad-size") == "FAILED"
        )

    await eventually(both_failed, within=20, message="both FAILED")
    host_status = await ic_status(kube, namespace, "bad-host")
    size_status = await ic_status(kube, namespace, "bad-size")
    assert host_status["error"].startswith("spec.hosts[0]:")
    assert "keySize 256 is not allowed for RSA" in size_status["error"]
    assert size_status["error"].startswith("spec.certOptions")
    assert host_status["observedGeneration"] == 1
    assert "renewalTime" not in host_status  # no retry until the spec changes
    assert issuer.requests == []

    await kube.patch_merge(
        ISSUED_CERTIFICATES,
        "bad-host",
        {"spec": {"hosts": ["istiod.istio-system.svc"]}},
        namespace=namespace,
    )

    async def fixed() -> bool:
        return await state_of(kube, namespace, "bad-host") == "FINISHED"

    await eventually(fixed, within=20, message="FINISHED once the spec is fixed")
    assert await state_of(kube, namespace, "bad-size") == "FAILED"


async def kube_secret_annotations(
    kube: KubeClient, namespace: str, name: str
) -> dict[str, str] | None:
    try:
        raw = await kube.get(SECRETS, name, namespace=namespace)
    except NotFound:
        return None
    return dict(raw["metadata"].get("annotations") or {})


async def consumer_idle(bus: Bus) -> bool:
    info = await bus.connection.js.consumer_info(bus.settings.stream, "agent-east")
    return bool(info.num_pending == 0 and info.num_ack_pending == 0)


async def test_duplicate_stale_and_malformed_answers_are_acknowledged_and_ignored(
    kube: KubeClient, namespace: str, agent: AgentProcess, issuer: FakeIssuer, bus: Bus
) -> None:
    await kube.create(ISSUED_CERTIFICATES, ic_body("istio-ca", namespace))

    async def finished() -> bool:
        return await state_of(kube, namespace, "istio-ca") == "FINISHED"

    await eventually(finished, within=20)
    before = await ic_status(kube, namespace, "istio-ca")
    secret_before = await get_secret(kube, namespace, "istio-ca-cacerts")
    answer = issuer.answers[0]
    ic = (await kube.list(ISSUED_CERTIFICATES, namespace=namespace)).items[0]
    model = IssuedCertificate.from_object(ic)
    original = issuer.requests[0]
    # A duplicate: the issuer answers the same issuance again (a new attempt, so not deduplicated
    # by the stream), with a freshly signed certificate.
    again = issuer.sign(
        original.model_copy(update={"data": original.data.model_copy(update={"attempt": 7})}),
        model,
    )
    await bus.publish(again)
    # A stale one: another issuance altogether.
    await bus.publish(answer.model_copy(update={"issuance": new_issuance_id()}))
    # A malformed one, straight on the agent's subject.
    await bus.connection.js.publish(
        subject("east", EventType.CERTIFICATE_ISSUED), b"{not json", stream=bus.settings.stream
    )
    await eventually(lambda: consumer_idle(bus), within=10, message="every message settled")

    after = await ic_status(kube, namespace, "istio-ca")
    assert after["serialNumber"] == before["serialNumber"]
    assert after["issuanceId"] == before["issuanceId"]
    assert after["state"] == "FINISHED"
    assert await get_secret(kube, namespace, "istio-ca-cacerts") == secret_before

    # and the agent still works
    await kube.create(ISSUED_CERTIFICATES, ic_body("second", namespace))

    async def second_finished() -> bool:
        return await state_of(kube, namespace, "second") == "FINISHED"

    await eventually(second_finished, within=20, message="a later issuance")
