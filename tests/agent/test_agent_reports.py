"""The agent's periodic report (`services.agent.reporting`): what it says about each
IssuedCertificate, that it is written again when nothing changes, and that an unreadable
object is left out rather than failing the report."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

from agent.agent_testing import AgentProcess, ic_body, ic_status, state_of

from services.agent.reporting import cluster_report
from services.agent.settings import AgentSettings
from shared.bus import Bus
from shared.events import CertificateState
from shared.events.reports import REPORTS_BUCKET, ClusterReport
from shared.k8s.client import KubeClient
from shared.k8s.resources import ISSUED_CERTIFICATES
from support.waiting import eventually

NOW = dt.datetime(2026, 12, 7, 12, 0, tzinfo=dt.UTC)


def test_the_report_lists_each_certificate_and_leaves_out_an_unreadable_one() -> None:
    objects = [
        {
            "metadata": {
                "name": "b",
                "namespace": "istio-system",
                "annotations": {"meshtrust.io/declaration-generation": "3"},
            },
            "status": {
                "state": "FINISHED",
                "notAfter": "2027-12-07T12:00:00Z",
                "renewalTime": "2027-08-07T12:00:00Z",
            },
        },
        {"metadata": {"name": "a", "namespace": "istio-system"}},
        {"metadata": {"name": "bad", "namespace": "x"}, "status": {"state": "NOT A STATE"}},
    ]
    report = cluster_report(
        objects, cluster="east", source="agent/east", interval=60.0, clock=lambda: NOW
    )
    assert (report.cluster, report.time, report.interval) == ("east", NOW, 60.0)
    assert [(c.name, c.state, c.generation) for c in report.certificates] == [
        ("a", CertificateState.PENDING, None),
        ("b", CertificateState.FINISHED, 3),
    ]
    b = report.certificates[1]
    assert b.not_after == dt.datetime(2027, 12, 7, 12, 0, tzinfo=dt.UTC)
    assert b.renewal_time == dt.datetime(2027, 8, 7, 12, 0, tzinfo=dt.UTC)
    assert ClusterReport.decode(report.encode()) == report


async def test_the_agent_reports_its_certificates_again_and_again(
    kube: KubeClient,
    namespace: str,
    bus: Bus,
    others: None,
    make_settings: Callable[..., AgentSettings],
) -> None:
    process = AgentProcess(make_settings(report_interval=0.2))
    await process.start()
    try:
        await kube.create(ISSUED_CERTIFICATES, ic_body("istio-ca", namespace))

        async def finished() -> bool:
            return await state_of(kube, namespace, "istio-ca") == "FINISHED"

        await eventually(finished, within=20)
        status = await ic_status(kube, namespace, "istio-ca")
        bucket = await bus.bucket(REPORTS_BUCKET, history=1)

        async def reported() -> ClusterReport | None:
            entry = await bucket.get("east")
            if entry is None:
                return None
            report = ClusterReport.decode(entry.value)
            return report if any(c.state == "FINISHED" for c in report.certificates) else None

        first = await eventually(reported, message="a report with the FINISHED certificate")
        (certificate,) = [c for c in first.certificates if c.name == "istio-ca"]
        assert certificate.namespace == namespace
        assert certificate.not_after is not None
        assert certificate.not_after.isoformat().replace("+00:00", "Z") == status["notAfter"]
        assert certificate.renewal_time is not None
        assert first.source == "agent/east-test"

        # Nothing changes, and the report is written again (a later time).
        async def again() -> ClusterReport | None:
            report = await reported()
            return report if report is not None and report.time > first.time else None

        await eventually(again, message="a second report")
    finally:
        await process.stop()
