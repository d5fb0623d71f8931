"""The agent's /metrics and readiness, scraped over HTTP from the agent run on a real
nats-server and the emulator: values checked against the objects they describe."""

from __future__ import annotations

import datetime as dt

import pytest
from agent.agent_testing import (
    AgentProcess,
    Audit,
    bundle_of,
    get_secret,
    ic_body,
    ic_status,
    utcnow,
)

from devstack.natsserver import NatsServer
from shared.api.v1alpha2 import State
from shared.k8s.client import KubeClient
from shared.k8s.resources import ISSUED_CERTIFICATES
from shared.pki import check_bundle, serial_hex
from support.metrics import Scrape, ready_status, scrape
from support.waiting import eventually

EXPIRY = "meshtrust_agent_certificate_expiration_timestamp_seconds"
RENEWAL = "meshtrust_agent_certificate_renewal_timestamp_seconds"
STATE = "meshtrust_agent_certificate_state"
DURATION = "meshtrust_agent_issuance_duration_seconds"


async def health_port(agent: AgentProcess) -> int:
    await eventually(
        lambda: agent.agent is not None and agent.agent.health.started.is_set(),
        message="the agent's health server",
    )
    assert agent.agent is not None
    port = agent.agent.health.port
    assert port is not None
    return port


async def finished_with(kube: KubeClient, namespace: str, name: str, *, not_serial: str) -> bool:
    status = await ic_status(kube, namespace, name)
    return status.get("state") == "FINISHED" and status.get("serialNumber") != not_serial


async def test_the_expiry_gauge_is_the_installed_certificates_not_after(
    kube: KubeClient, namespace: str, agent: AgentProcess, audit: Audit
) -> None:
    body = ic_body("istio-ca", namespace)
    await kube.create(ISSUED_CERTIFICATES, body)
    port = await health_port(agent)
    await eventually(
        lambda: finished_with(kube, namespace, "istio-ca", not_serial=""),
        within=20,
        message="FINISHED",
    )
    data = await get_secret(kube, namespace, "istio-ca-cacerts")
    assert data is not None
    info = check_bundle(bundle_of(data), hosts=body["spec"]["hosts"], org="meshtrust", now=utcnow())
    status = await ic_status(kube, namespace, "istio-ca")
    labels = {"cluster": "east", "namespace": namespace, "name": "istio-ca"}

    # The gauges read the informer's copy: wait for it to have the FINISHED status.
    async def finished_scrape() -> Scrape | None:
        got = await scrape(port)
        return got if got.value(STATE, **labels, state="FINISHED") == 1.0 else None

    metrics = await eventually(finished_scrape, message="FINISHED in the metrics")

    assert metrics.value(EXPIRY, **labels) == info.not_after.timestamp()
    renewal = metrics.value(RENEWAL, **labels)
    assert renewal is not None
    assert renewal == dt.datetime.fromisoformat(status["renewalTime"]).timestamp()
    assert info.not_before.timestamp() < renewal < info.not_after.timestamp()
    assert {s: metrics.value(STATE, **labels, state=s.value) for s in State} == {
        s: (1.0 if s is State.FINISHED else 0.0) for s in State
    }
    assert metrics.types[EXPIRY] == "gauge"
    assert metrics.types[DURATION] == "histogram"
    assert metrics.value(f"{DURATION}_count", **labels) == 1.0
    assert metrics.value(f"{DURATION}_bucket", **labels, le="+Inf") == 1.0
    # The issuance ids are never label values.
    assert status["issuanceId"] not in metrics.label_values()

    # The bus consumer's figures: the certificate.issued acked (once its handler returned: after
    # the state it led to, maybe), nothing left in flight.
    async def acked() -> bool:
        got = await scrape(port)
        acks = got.value(
            "meshtrust_bus_messages_handled_total", durable="agent-east", outcome="ack"
        )
        return (acks or 0.0) >= 1.0 and got.value(
            "meshtrust_bus_messages_in_flight", durable="agent-east"
        ) == 0.0

    await eventually(acked, message="the certificate.issued acked")


@pytest.mark.slow
async def test_the_issuance_histogram_counts_each_renewal_once(
    kube: KubeClient, namespace: str, agent: AgentProcess
) -> None:
    await kube.create(
        ISSUED_CERTIFICATES,
        ic_body("istio-ca", namespace, ttl="16s", secretRotationGracePeriodRatio=0.5),
    )
    port = await health_port(agent)
    labels = {"cluster": "east", "namespace": namespace, "name": "istio-ca"}
    await eventually(
        lambda: finished_with(kube, namespace, "istio-ca", not_serial=""),
        within=20,
        message="the first issuance",
    )
    first = await ic_status(kube, namespace, "istio-ca")
    assert (await scrape(port)).value(f"{DURATION}_count", **labels) == 1.0

    await eventually(
        lambda: finished_with(kube, namespace, "istio-ca", not_serial=first["serialNumber"]),
        within=30,
        message="the renewal",
    )
    # The renewed certificate's renewal is 8 s away: nothing else is issued meanwhile.
    metrics = await scrape(port)
    assert metrics.value(f"{DURATION}_count", **labels) == 2.0
    renewed = await ic_status(kube, namespace, "istio-ca")
    data = await get_secret(kube, namespace, "istio-ca-cacerts")
    assert data is not None
    info = check_bundle(
        bundle_of(data),
        hosts=[f"spiffe://cluster.local/ns/{namespace}/sa/istio-ca"],
        org="meshtrust",
        now=utcnow(),
    )
    assert serial_hex(info.serial) == renewed["serialNumber"]

    async def expiry_follows() -> bool:
        return (await scrape(port)).value(EXPIRY, **labels) == info.not_after.timestamp()

    await eventually(expiry_follows, message="the expiry gauge to follow the renewal")


@pytest.mark.slow
async def test_readiness_is_false_while_nats_is_down_and_true_after_it_is_back(
    agent: AgentProcess, nats_server: NatsServer
) -> None:
    port = await health_port(agent)
    await eventually(
        lambda: _ready(port, 200), within=20, message="the agent ready before the outage"
    )
    nats_server.stop()
    await eventually(lambda: _ready(port, 503), within=10, message="not ready without NATS")
    nats_server.start()
    await eventually(lambda: _ready(port, 200), within=20, message="ready after the reconnect")


async def _ready(port: int, status: int) -> bool:
    return await ready_status(port) == status
