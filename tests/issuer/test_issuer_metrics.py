"""The issuer's /metrics and readiness, scraped over HTTP from issuer replicas run in-process on
a real nats-server and the emulated management cluster."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from devstack.natsserver import NatsServer
from issuer.issuer_testing import (
    SIGNING_SECRET,
    SYSTEM_NAMESPACE,
    Hierarchy,
    declaration,
    make_ca,
    secret_body,
    world,
)
from services.issuer.app import serve
from services.issuer.settings import IssuerSettings
from shared.bus import NatsSettings
from shared.events import StatusChanged
from shared.runtime.health import HealthServer
from support.events import sample_events
from support.metrics import Scrape, ready_status, scrape
from support.waiting import eventually

SIGNATURES = "meshtrust_issuer_signatures_total"
DURATION = "meshtrust_issuer_signing_duration_seconds"
DENIALS = "meshtrust_issuer_denials_total"
LAST_SEEN = "meshtrust_issuer_cluster_last_seen_timestamp_seconds"


@asynccontextmanager
async def replica(settings: IssuerSettings) -> AsyncIterator[int]:
    """One issuer replica for the body; yields its health port."""
    stop = asyncio.Event()
    health = HealthServer(settings.health)
    async with asyncio.TaskGroup() as group:
        task = group.create_task(
            serve(settings, stop=stop, handle_signals=False, health=health), name="issuer"
        )
        await eventually(lambda: health.started.is_set() or task.done(), message="issuer up")
        assert health.port is not None
        try:
            yield health.port
        finally:
            stop.set()


async def test_signatures_denials_and_durations_are_counted_once_per_request(
    tmp_path: Path, nats_settings: NatsSettings
) -> None:
    async with world(tmp_path, nats_settings) as w, replica(w.settings()) as port:
        east = w.agent("east")
        decl = await w.create(declaration("east", "istio-ca"))
        before = dt.datetime.now(dt.UTC)
        request = await east.send(east.request(decl))
        await w.answers.issued(request.issuance)
        # The same request again (a re-send): answered with the same certificate, no new
        # signature, nothing observed.
        await east.send(
            request.model_copy(update={"data": request.data.model_copy(update={"attempt": 2})})
        )
        await eventually(
            lambda: len(w.answers.by_issuance[request.issuance]) == 2, message="the second answer"
        )
        wrong_hosts = east.request(decl, csr_pem=east.csr_for(decl, hosts=["spiffe://x/ns/y/sa/z"]))
        await east.send(wrong_hosts)
        denied = await w.answers.denied(wrong_hosts.issuance)

        # Scraped once the three requests are acked: their handlers have returned.
        async def all_acked() -> Scrape | None:
            got = await scrape(port)
            acks = got.value(
                "meshtrust_bus_messages_handled_total", durable="csr-east", outcome="ack"
            )
            return got if acks == 3.0 else None

        metrics = await eventually(all_acked, message="the three requests acked")
        assert metrics.value(SIGNATURES, cluster="east") == 1.0
        assert metrics.value(f"{DURATION}_count", cluster="east") == 1.0
        assert metrics.value(DENIALS, cluster="east", reason=denied.data.reason) == 1.0
        assert metrics.values(DENIALS, cluster="east") == [1.0]
        seen = metrics.value(LAST_SEEN, cluster="east")
        assert seen is not None
        assert before.timestamp() <= seen <= dt.datetime.now(dt.UTC).timestamp()
        assert metrics.value(LAST_SEEN, cluster="west") is None
        assert request.issuance not in metrics.label_values()
        assert wrong_hosts.issuance not in metrics.label_values()
        assert metrics.value("meshtrust_bus_messages_in_flight", durable="csr-east") == 0.0


async def test_a_status_report_marks_its_cluster_as_heard_from(
    tmp_path: Path, nats_settings: NatsSettings
) -> None:
    async with world(tmp_path, nats_settings) as w, replica(w.settings()) as port:
        await w.create(declaration("west", "istio-ca"))
        before = dt.datetime.now(dt.UTC)
        report = next(e for e in sample_events("west") if isinstance(e, StatusChanged))
        await w.bus.publish(report)

        async def heard() -> float | None:
            return (await scrape(port)).value(LAST_SEEN, cluster="west")

        seen = await eventually(heard, message="west heard from")
        assert before.timestamp() <= seen <= dt.datetime.now(dt.UTC).timestamp()
        assert (await scrape(port)).value(LAST_SEEN, cluster="east") is None


async def test_the_ca_expiry_gauges_are_each_signing_secrets_certificates(
    tmp_path: Path, nats_settings: NatsSettings
) -> None:
    async with world(tmp_path, nats_settings) as w, replica(w.settings()) as port:
        root = make_ca("metrics root")
        short = Hierarchy(root=root, signer=make_ca("short-lived signer", root, days=30))
        await w.put_signing_secret(short, name="short-lived")
        await w.create(secret_body("not-a-ca", SYSTEM_NAMESPACE, {"token": b"opaque"}))
        ca_expiry = "meshtrust_issuer_signing_ca_expiration_timestamp_seconds"
        root_expiry = "meshtrust_issuer_root_ca_expiration_timestamp_seconds"

        async def both() -> Scrape | None:
            got = await scrape(port)
            return got if len(got.values(ca_expiry)) == 2 else None

        metrics = await eventually(both, message="both signing Secrets in the metrics")
        for name, hierarchy in ((SIGNING_SECRET, w.hierarchy), ("short-lived", short)):
            labels = {"namespace": SYSTEM_NAMESPACE, "name": name}
            assert metrics.value(ca_expiry, **labels) == (
                hierarchy.signer.cert.not_valid_after_utc.timestamp()
            )
            assert metrics.value(root_expiry, **labels) == (
                hierarchy.root.cert.not_valid_after_utc.timestamp()
            )
        assert metrics.value(ca_expiry, namespace=SYSTEM_NAMESPACE, name="not-a-ca") is None
        assert metrics.value(ca_expiry, name="short-lived") != metrics.value(
            root_expiry, name="short-lived"
        )


@pytest.mark.slow
async def test_readiness_is_false_while_nats_is_down_and_true_after_it_is_back(
    tmp_path: Path, nats_settings: NatsSettings, nats_server: NatsServer
) -> None:
    async with world(tmp_path, nats_settings) as w, replica(w.settings()) as port:

        async def ready(status: int) -> bool:
            return await ready_status(port) == status

        await eventually(lambda: ready(200), within=20, message="ready before the outage")
        nats_server.stop()
        await eventually(lambda: ready(503), within=10, message="not ready without NATS")
        nats_server.start()
        await eventually(lambda: ready(200), within=20, message="ready after the reconnect")
