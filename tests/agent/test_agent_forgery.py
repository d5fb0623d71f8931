"""A forged `certificate.issued` is refused and does not end the issuance: the agent (real bus,
emulated cluster) says so with a Warning Event and status.error, stays REQUESTED, writes no
Secret, and installs the real issuer's answer when it comes (after its timed re-send).

The attacker plays what issue 15 saw a bouncer do: read the CSR from the stream and answer it
with a certificate of its own root (made at test time; no key material is committed), or with
the real CA's signature but a validity far beyond the declared one."""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Callable
from typing import Any

import aiohttp
from agent.agent_testing import (
    TRUST_BUNDLE,
    AgentProcess,
    Audit,
    FakeIssuer,
    get_secret,
    ic_body,
    ic_status,
    make_signing_ca,
    put_trust_bundle,
    wait_status,
)
from cryptography import x509
from structlog.testing import capture_logs

from services.agent.settings import AgentSettings
from shared.api.v1alpha2 import IssuedCertificate
from shared.bus import Bus
from shared.events import CertificateIssued, CsrRequested
from shared.k8s.client import KubeClient
from shared.k8s.errors import NotFound
from shared.k8s.resources import CONFIG_MAPS, EVENTS, ISSUED_CERTIFICATES
from shared.pki import Bundle, check_bundle, serial_hex, sign_intermediate
from shared.runtime.clock import utcnow
from support.waiting import eventually

_attempts = itertools.count(90)


async def refused_as(kube: KubeClient, namespace: str, reason: str, *, issuance: str) -> None:
    """istio-ca reports the refusal `reason` in status.error and a Warning Event, and is still
    REQUESTED for the same issuance."""
    status = await wait_status(
        kube,
        namespace,
        "istio-ca",
        lambda s: reason in (s.get("error") or ""),
        message=f"{reason} reported",
    )
    assert (status["state"], status["issuanceId"]) == ("REQUESTED", issuance)
    await eventually(
        lambda: warned(kube, namespace, "istio-ca", reason), message=f"a Warning for {reason}"
    )


async def warnings(kube: KubeClient, namespace: str, name: str) -> list[dict[str, Any]]:
    events = await kube.list(EVENTS, namespace=namespace)
    return [
        e
        for e in events.items
        if e["involvedObject"]["name"] == name and e.get("type") == "Warning"
    ]


async def warned(kube: KubeClient, namespace: str, name: str, text: str) -> bool:
    return any(text in e["message"] for e in await warnings(kube, namespace, name))


def forged(
    request: CsrRequested, ic: IssuedCertificate, *, attacker: FakeIssuer, ttl: dt.timedelta
) -> CertificateIssued:
    """The attacker's answer to `request`: its CA, our CSR's key and names, `ttl`."""
    spec = ic.spec
    issued = sign_intermediate(
        x509.load_pem_x509_csr(request.data.csr_pem.encode()),
        attacker.ca,
        hosts=spec.hosts,
        org=spec.org,
        name=request.data.name,
        ttl=ttl,
        now=utcnow(),
    )
    answer = attacker.sign(request, ic)  # the envelope the issuer would send ...
    data = answer.data.model_copy(  # ... carrying the forged certificate
        update={
            "serial_number": serial_hex(issued.serial),
            "certificate_pem": issued.certificate_pem.decode(),
            "ca_chain_pem": issued.chain_pem[len(issued.certificate_pem) :].decode(),
            "root_cert_pem": issued.root_pem.decode(),
            "not_before": issued.not_before,
            "not_after": issued.not_after,
            # another attempt than the real answer's: this test is about the agent, not about
            # the Nats-Msg-Id the real answer is deduplicated by (the bus's business)
            "attempt": next(_attempts),
        }
    )
    return answer.model_copy(update={"data": data, "source": "bouncer/east"})


async def test_a_forged_certificate_is_refused_and_the_real_answer_is_installed(
    kube: KubeClient,
    namespace: str,
    bus: Bus,
    issuer: FakeIssuer,
    audit: Audit,
    others: None,
    make_settings: Callable[..., AgentSettings],
) -> None:
    issuer.mode = "silent"  # the real answer comes later: the forgeries get there first
    agent = AgentProcess(make_settings(resend_after=2.0))
    await agent.start()
    try:
        body = ic_body("istio-ca", namespace, ttl="24h")
        await kube.create(ISSUED_CERTIFICATES, body)
        await eventually(lambda: issuer.requests, within=20, message="the CSR")
        request = issuer.requests[0]
        ic = IssuedCertificate.from_object(
            await kube.get(ISSUED_CERTIFICATES, "istio-ca", namespace=namespace)
        )
        attacker = FakeIssuer(bus=bus, kube=kube, ca=make_signing_ca())
        real_ca = FakeIssuer(bus=bus, kube=kube, ca=issuer.ca)

        with capture_logs() as logs:
            # 1. signed by the attacker's own root, for our key and names
            await bus.publish(forged(request, ic, attacker=attacker, ttl=dt.timedelta(days=2)))
            await refused_as(kube, namespace, "UntrustedRoot", issuance=request.issuance)
            # 2. the real CA's signature, but valid for 10 days where 24 h are declared
            await bus.publish(forged(request, ic, attacker=real_ca, ttl=dt.timedelta(days=10)))
            await refused_as(kube, namespace, "ValidityTooLong", issuance=request.issuance)
            assert await get_secret(kube, namespace, "istio-ca-cacerts") is None

            # 3. the issuer answers the agent's next timed re-send: that one is installed
            issuer.mode = "sign"
            await wait_status(
                kube,
                namespace,
                "istio-ca",
                lambda s: s.get("state") == "FINISHED",
                within=30,
                message="FINISHED with the real answer",
            )
        refused = [e for e in logs if e["event"].startswith("issued certificate refused")]
        assert [e["reason"] for e in refused] == ["UntrustedRoot", "ValidityTooLong"]
        assert all(e["source"] == "bouncer/east" for e in refused)
    finally:
        await agent.stop()

    status = await ic_status(kube, namespace, "istio-ca")
    assert status["error"] == ""
    assert status["issuanceId"] == request.issuance, "the same issuance, never FAILED"
    assert "FAILED" not in audit.states("istio-ca")
    data = await get_secret(kube, namespace, "istio-ca-cacerts")
    assert data is not None
    bundle = Bundle.from_secret_data(data)
    assert bundle.root_cert_pem.decode() == issuer.answers[-1].data.root_cert_pem
    info = check_bundle(bundle, hosts=body["spec"]["hosts"], org="meshtrust", now=utcnow())
    assert (
        serial_hex(info.serial) == status["serialNumber"] == issuer.answers[-1].data.serial_number
    )
    reasons = {e["reason"] for e in await warnings(kube, namespace, "istio-ca")}
    assert reasons == {"UntrustedCertificate"}
    for event in await warnings(kube, namespace, "istio-ca"):
        assert "PRIVATE" + " KEY" not in event["message"]


async def test_without_a_trust_bundle_nothing_is_installed_until_an_administrator_pins_the_root(
    kube: KubeClient,
    namespace: str,
    issuer: FakeIssuer,
    others: None,
    make_settings: Callable[..., AgentSettings],
    trust_bundle: str,
) -> None:
    bundle_namespace, bundle_name = TRUST_BUNDLE
    await kube.delete(CONFIG_MAPS, bundle_name, namespace=bundle_namespace)

    async def gone() -> bool:
        try:
            await kube.get(CONFIG_MAPS, bundle_name, namespace=bundle_namespace)
        except NotFound:
            return True
        return False

    await eventually(gone, message="the trust bundle deleted")
    agent = AgentProcess(make_settings(resend_after=2.0))
    await agent.start()
    try:
        await eventually(lambda: agent.agent is not None, message="the agent built")
        assert agent.agent is not None
        health = agent.agent.health
        await eventually(lambda: health.port is not None, message="health endpoint up")

        async def readyz() -> int:
            async with (
                aiohttp.ClientSession() as http,
                http.get(f"http://127.0.0.1:{health.port}/readyz") as response,
            ):
                return response.status

        await kube.create(ISSUED_CERTIFICATES, ic_body("istio-ca", namespace))
        status = await wait_status(
            kube,
            namespace,
            "istio-ca",
            lambda s: "TrustBundleMissing" in (s.get("error") or ""),
            message="the missing trust bundle reported",
        )
        assert status["state"] == "REQUESTED"
        assert f"{bundle_namespace}/{bundle_name}" in status["error"]
        assert await readyz() == 503
        assert any(
            e["reason"] == "TrustBundleUnavailable"
            for e in await warnings(kube, namespace, "istio-ca")
        )
        assert await get_secret(kube, namespace, "istio-ca-cacerts") is None

        await put_trust_bundle(kube, trust_bundle)  # the administrator's fix
        await wait_status(
            kube,
            namespace,
            "istio-ca",
            lambda s: s.get("state") == "FINISHED",
            within=30,
            message="FINISHED once the root is pinned",
        )
        assert await readyz() == 200
    finally:
        await agent.stop()
