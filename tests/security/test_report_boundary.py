"""The reports bucket's boundary, tried from each identity's own credentials: a cluster's agent
writes its own report key and no other (docs/bus.md, "Trust boundaries").

A real nats-server with the shipped account model (`devstack.natsconfig`), nkeys, provisioned
as `meshtrust-issuer provision` does; what the hub stored is read back with the issuer's
credentials, key by key, not merely that a call failed.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import pytest

from devstack.natsconfig import report_subject
from services.agent.reporting import Reporter
from shared.bus import Bucket, Bus
from shared.events.reports import REPORTS_BUCKET, ClusterReport
from shared.runtime.clock import utcnow
from shared.runtime.errors import TransientError
from support.secured_nats import SecuredNats, secured_nats
from support.waiting import eventually

CLUSTERS = ("east", "west")
ATTACKERS = ("agent-west", "bouncer-west", "bouncer-east", "auditor")
"""Identities that must not write east's report."""


def forged(cluster: str) -> bytes:
    return ClusterReport(
        cluster=cluster, source="agent/west", time=utcnow(), interval=60.0
    ).encode()


@pytest.fixture(scope="module")
def nats_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecuredNats]:
    with secured_nats(tmp_path_factory.mktemp("hub"), CLUSTERS) as hub:

        async def provision() -> None:
            await hub.provision(CLUSTERS)
            async with Bus.connect(hub.settings("provisioner", provision=True)) as bus:
                await bus.bucket(REPORTS_BUCKET, history=1)

        asyncio.run(provision())
        yield hub


@pytest.fixture
async def reports(nats_hub: SecuredNats) -> AsyncIterator[Bucket]:
    """The bucket as the issuer reads it."""
    async with Bus.connect(nats_hub.settings("issuer")) as issuer:
        yield await issuer.bucket(REPORTS_BUCKET)


async def revision(bucket: Bucket, key: str) -> int:
    entry = await bucket.get(key)
    return entry.revision if entry is not None else 0


@pytest.mark.parametrize("attacker", ATTACKERS)
@pytest.mark.parametrize(
    "target",
    [
        report_subject("east"),
        "$KV.meshtrust-reports.east.extra",
        "$KV.meshtrust-reports.>",
        "$KV.meshtrust-reports.*",
    ],
)
async def test_no_other_identity_can_write_easts_report(
    nats_hub: SecuredNats, reports: Bucket, attacker: str, target: str
) -> None:
    before = await revision(reports, "east")
    client = await nats_hub.connect_raw(attacker)
    try:
        await client.publish(target, forged("east"))
        await client.flush(timeout=2)
    finally:
        await client.close()
    # A write of west's own key after the attempt, as a marker: once it is stored, the
    # attacker's publish (sent before it on another connection) has been judged too.
    await _marker(nats_hub)
    assert await revision(reports, "east") == before
    assert await revision(reports, "east.extra") == 0


async def _marker(nats_hub: SecuredNats) -> None:
    async with Bus.connect(nats_hub.settings("agent-west")) as west:
        bucket = await west.bucket(REPORTS_BUCKET)
        await bucket.put("west", forged("west"))


async def test_a_clusters_agent_writes_its_own_report_and_not_anothers(
    nats_hub: SecuredNats, reports: Bucket
) -> None:
    before = await revision(reports, "east")
    async with Bus.connect(nats_hub.settings("agent-west")) as west:
        bucket = await west.bucket(REPORTS_BUCKET)
        assert await bucket.put("west", forged("west")) > 0
        # Refused by the server's permissions: no acknowledgement ever comes.
        with pytest.raises(TransientError, match="meshtrust-reports/east"):
            await bucket.put("east", forged("east"))
    assert await revision(reports, "east") == before


async def test_the_agents_reporter_writes_through_its_own_credentials(
    nats_hub: SecuredNats, reports: Bucket
) -> None:
    async with Bus.connect(nats_hub.settings("agent-east")) as east:
        reporter = Reporter(east, [], cluster="east", source="agent/east", interval=60.0)
        await reporter.report()
        assert reporter.written == 1

    async def stored() -> ClusterReport | None:
        entry = await reports.get("east")
        return ClusterReport.decode(entry.value) if entry is not None else None

    report = await eventually(stored, message="east's report stored")
    assert (report.cluster, report.source, report.certificates) == ("east", "agent/east", ())
