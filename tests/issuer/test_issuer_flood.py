"""One cluster's flood: every CSR answered, at most its quota signed, and another cluster served
meanwhile, not after the flood.

Over the real stack: nats-server with the shipped account model (each cluster's agent publishes
with its own nkey, through its account's imports), the API emulator, the issuer in-process with
the issuer's own credential. The flood is in the stream before the issuer starts, with the other
cluster's CSR behind all of it: one durable read in stream order would answer it last.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import nats.js.errors
import pytest

from devstack.natsconfig import PROVISIONER_USER
from issuer.issuer_testing import Agent, World, declaration, running, world
from issuer.test_issuer_signing import ledger_entries
from services.issuer.flood import OverRate
from services.issuer.issued import ISSUED_BUCKET
from shared.bus import Bus, NatsSettings
from shared.controller.policy import Finding
from shared.events import CertificateDenied, CertificateIssued, CsrRequested
from support.secured_nats import SecuredNats, secured_nats
from support.waiting import eventually

FLOOD = 2_000
BURST = 5
CLUSTERS = ("east", "west")

T0 = dt.datetime(2026, 6, 1, 12, 0, tzinfo=dt.UTC)


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[SecuredNats]:
    with secured_nats(tmp_path / "nats", CLUSTERS) as nats:
        yield nats


def test_a_cluster_over_its_rate_is_known_so_until_its_retry_time_and_no_longer() -> None:
    over = OverRate()
    later, sooner = Finding("RateLimited", "until 12:06"), Finding("RateLimited", "until 12:03")
    assert over.until("east", T0) is None
    over.note("east", T0 + dt.timedelta(minutes=6), later)
    over.note("east", T0 + dt.timedelta(minutes=3), sooner)  # an older answer never shortens it
    assert over.until("east", T0) == (T0 + dt.timedelta(minutes=6), later)
    assert over.until("west", T0) is None, "clusters are apart"
    assert over.until("east", T0 + dt.timedelta(minutes=6)) is None


async def publish_all(agent: Agent, requests: list[CsrRequested]) -> None:
    """Publish through the agent's own connection, a hundred at a time."""
    for start in range(0, len(requests), 100):
        await asyncio.gather(*(agent.send(r) for r in requests[start : start + 100]))


def answered(w: World, requests: list[CsrRequested]) -> int:
    return sum(1 for r in requests if w.answers.by_issuance.get(r.issuance))


async def test_a_flood_is_answered_within_its_quota_and_another_cluster_is_served_meanwhile(
    tmp_path: Path, hub: SecuredNats
) -> None:
    await hub.provision(CLUSTERS)
    provisioner = hub.settings(PROVISIONER_USER, provision=True, publish_deadline=20.0)
    async with (
        world(tmp_path, provisioner) as w,
        Bus.connect(hub.settings("agent-east", publish_deadline=20.0)) as east_bus,
        Bus.connect(hub.settings("agent-west", publish_deadline=20.0)) as west_bus,
    ):
        east_decl = await w.create(declaration("east", "istio-ca"))
        west_decl = await w.create(declaration("west", "istio-ca"))
        east, west = Agent(east_bus, "east"), Agent(west_bus, "west")
        flood = [east.request(east_decl) for _ in range(FLOOD)]
        await publish_all(east, flood)
        behind = await west.send(west.request(west_decl))

        settings = w.settings(
            nats=hub.settings("issuer", publish_deadline=20.0),
            issuance_burst=BURST,
            issuance_per_hour=1,  # nothing refills while the test runs
        )
        async with running(settings):
            await w.answers.issued(behind.issuance)
            east_answered_then = answered(w, flood)
            await eventually(
                lambda: answered(w, flood) == FLOOD,
                within=60,
                message="every CSR of the flood answered",
            )
            # The issuer is still serving west: a CSR sent now (its doorbell rings across
            # west's account) is signed too.
            later = await west.send(west.request(west_decl))
            await w.answers.issued(later.issuance)

        # West's CSR, behind the whole flood in the stream, was signed while most of the flood
        # waited: east's durable holds a few of east's CSRs at a time, not the stream's order.
        assert east_answered_then < FLOOD // 4, east_answered_then
        answers = [w.answers.by_issuance[r.issuance] for r in flood]
        assert all(len(a) == 1 for a in answers), "each CSR answered once"
        issued = [a[0] for a in answers if isinstance(a[0], CertificateIssued)]
        denied = [a[0] for a in answers if isinstance(a[0], CertificateDenied)]
        assert len(issued) == BURST
        assert len(denied) == FLOOD - BURST
        assert {d.data.reason for d in denied} == {"RateLimited"}
        # The cheap denials say what the full ones say.
        assert all(
            d.data.message.startswith("cluster east is over its issuance rate") for d in denied
        )
        assert all(d.data.retry_after is not None for d in denied)
        entries = await ledger_entries(w)
        assert sorted(e["cluster"] for e in entries) == ["east"] * BURST + ["west"] * 2
        records = await w.bus.bucket(ISSUED_BUCKET, history=1)
        assert len([k for k in await records.keys() if k.startswith("east.")]) == BURST


async def test_a_csr_stored_before_its_clusters_durable_existed_is_answered(
    tmp_path: Path, nats_settings: NatsSettings
) -> None:
    # No issuer has run: no durable reads east's CSRs yet, and none heard this one arrive.
    async with world(tmp_path, nats_settings) as w:
        decl = await w.create(declaration("east", "istio-ca"))
        east = w.agent("east")
        early = await east.send(east.request(decl))
        with pytest.raises(nats.js.errors.NotFoundError):
            await w.bus.connection.js.consumer_info("MESHTRUST", "csr-east")
        # Well within the 30 s sweep: the durable's creation serves it.
        async with running(w.settings()):
            await w.answers.issued(early.issuance)
