"""What the issuer knows of each cluster (`services.issuer.heartbeats.Heartbeats`), from a real
reports bucket: a report just written counts as heard now, one read back after a restart at its
own time, a report under another cluster's key or unreadable is ignored, events count too, and
the expiry metrics come from the reports."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import AsyncIterator
from typing import Any, cast

import pytest
from prometheus_client import CollectorRegistry

from services.issuer.heartbeats import Heartbeats
from services.issuer.metrics import IssuerMetrics
from services.issuer.settings import IssuerSettings
from shared.bus import Bucket, Bus
from shared.events import CertificateState
from shared.events.reports import REPORTS_BUCKET, ClusterReport, ReportedCertificate
from support.waiting import eventually

NOW = dt.datetime(2026, 12, 7, 12, 0, tzinfo=dt.UTC)
EXPIRY = dt.datetime(2027, 12, 7, 12, 0, tzinfo=dt.UTC)


def report(cluster: str, *, at: dt.datetime) -> bytes:
    certificate = ReportedCertificate(
        name="istio-ca",
        namespace="istio-system",
        state=CertificateState.FINISHED,
        not_after=EXPIRY,
        renewal_time=EXPIRY - dt.timedelta(days=120),
    )
    return ClusterReport(
        cluster=cluster,
        source=f"agent/{cluster}",
        time=at,
        interval=60.0,
        certificates=(certificate,),
    ).encode()


@contextlib.asynccontextmanager
async def following(bucket: Bucket, registry: CollectorRegistry) -> AsyncIterator[Heartbeats]:
    heartbeats = Heartbeats(
        IssuerSettings(),
        kube=cast(Any, None),
        declarations=cast(Any, None),
        metrics=IssuerMetrics(registry),
        clock=lambda: NOW,
    )
    task = asyncio.create_task(heartbeats.watch(bucket))
    try:
        await asyncio.wait_for(heartbeats.loaded.wait(), timeout=10)
        yield heartbeats
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@pytest.fixture
async def bucket(bus: Bus) -> Bucket:
    return await bus.bucket(REPORTS_BUCKET, history=1)


async def test_reports_read_back_fresh_and_forged(bucket: Bucket) -> None:
    await bucket.put("east", report("east", at=NOW - dt.timedelta(minutes=5)))
    await bucket.put("west", report("east", at=NOW))  # east's report under west's key
    await bucket.put("north", b"not a report")
    registry = CollectorRegistry()
    async with following(bucket, registry) as heartbeats:
        # Read back after a (re)start: heard at the report's own time.
        assert heartbeats.seen("east").heard == NOW - dt.timedelta(minutes=5)
        assert heartbeats.seen("west").heard is None
        assert heartbeats.seen("north").heard is None
        assert {r.cluster for r in heartbeats.reports()} == {"east"}

        # Written while following: heard now, by the issuer's clock, whatever the agent says.
        await bucket.put("south", report("south", at=NOW - dt.timedelta(days=1)))
        seen = await eventually(lambda: heartbeats.seen("south").heard, message="south heard")
        assert seen == NOW
        assert heartbeats.seen("south").reported == NOW - dt.timedelta(days=1)

        labels = {"cluster": "east", "namespace": "istio-system", "name": "istio-ca"}
        expiry = "meshtrust_issuer_certificate_expiration_timestamp_seconds"
        renewal = "meshtrust_issuer_certificate_renewal_timestamp_seconds"
        last_seen = "meshtrust_issuer_cluster_last_seen_timestamp_seconds"
        assert registry.get_sample_value(expiry, labels) == EXPIRY.timestamp()
        assert (
            registry.get_sample_value(renewal, labels)
            == (EXPIRY - dt.timedelta(days=120)).timestamp()
        )
        assert registry.get_sample_value(last_seen, {"cluster": "south"}) == NOW.timestamp()


async def test_last_seen_never_moves_back(bucket: Bucket) -> None:
    async with following(bucket, CollectorRegistry()) as heartbeats:
        heartbeats.noted("east", NOW)
        heartbeats.noted("east", NOW - dt.timedelta(minutes=1))
        assert heartbeats.seen("east").heard == NOW
