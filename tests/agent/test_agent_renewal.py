"""Renewal: a short-lived certificate is replaced before it expires, with a new key and serial,
and the issued Secret holds a complete, valid bundle at every moment in between."""

from __future__ import annotations

import asyncio
import time

import pytest
from agent.agent_testing import AgentProcess, bundle_of, get_secret, ic_body, ic_status
from k8s.harness import eventually

from shared.k8s.client import KubeClient
from shared.k8s.resources import ISSUED_CERTIFICATES
from shared.pki import PkiError, check_bundle
from shared.runtime.clock import utcnow


@pytest.mark.slow
async def test_a_short_lived_certificate_is_renewed_in_place_without_a_gap(
    kube: KubeClient, namespace: str, agent: AgentProcess
) -> None:
    body = ic_body("istio-ca", namespace, ttl="16s", secretRotationGracePeriodRatio=0.5)
    hosts = body["spec"]["hosts"]
    await kube.create(ISSUED_CERTIFICATES, body)

    async def first_finished() -> bool:
        return (await ic_status(kube, namespace, "istio-ca")).get("state") == "FINISHED"

    await eventually(first_finished, within=20, message="the first issuance")
    first = await ic_status(kube, namespace, "istio-ca")
    first_data = await get_secret(kube, namespace, "istio-ca-cacerts")
    assert first_data is not None
    renewal = first["renewalTime"]
    assert renewal < first["notAfter"]

    serials: list[int] = []
    problems: list[str] = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        data = await get_secret(kube, namespace, "istio-ca-cacerts")
        if data is None:
            problems.append("the issued Secret was absent")
        else:
            try:
                info = check_bundle(bundle_of(data), hosts=hosts, org="meshtrust", now=utcnow())
            except PkiError as exc:
                problems.append(str(exc))
            else:
                if not serials or serials[-1] != info.serial:
                    serials.append(info.serial)
        status = await ic_status(kube, namespace, "istio-ca")
        if len(serials) >= 2 and status.get("state") == "FINISHED":
            break
        await asyncio.sleep(0.05)

    assert problems == []
    assert len(serials) >= 2, "renewed before expiry"
    renewed = await ic_status(kube, namespace, "istio-ca")
    assert renewed["serialNumber"] != first["serialNumber"]
    assert renewed["issuanceId"] != first["issuanceId"]
    assert renewed["notAfter"] > first["notAfter"]
    renewed_data = await get_secret(kube, namespace, "istio-ca-cacerts")
    assert renewed_data is not None
    assert renewed_data["ca-key.pem"] != first_data["ca-key.pem"]
