"""The status mirror folds the reports of one declaration handled together into one write.

Across the real bus and the emulated management cluster: the writes are counted by watching the
declaration (each status write is one MODIFIED event of the emulator's watch), the acks by the
durable's own counters."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path
from typing import Any

import nats.js.errors
import pytest

from issuer.issuer_testing import declaration, running, world
from services.issuer.mirror import announced, mirrored_status
from services.issuer.mirroring import StatusMirror, folded_status
from shared.api.meta import ObjectKey
from shared.api.v1alpha2 import IssuedCertificate, IssuedCertificateStatus, State
from shared.bus import NatsSettings
from shared.events import CertificateState, StatusChanged, StatusChangedData
from shared.k8s import EventRecorder, KubeClient
from shared.k8s.informer import EventType, Informer, InformerEvent
from shared.k8s.resources import EVENTS, ISSUED_CERTIFICATES
from shared.runtime import TransientError
from support.waiting import eventually

STEPS = (CertificateState.REQUESTED, CertificateState.ISSUED, CertificateState.FINISHED)


def report(
    state: CertificateState,
    *,
    issuance: str,
    generation: int,
    not_after: dt.datetime | None,
    name: str = "istio-ca",
) -> StatusChanged:
    return StatusChanged(
        source="agent/east",
        cluster="east",
        issuance=issuance,
        data=StatusChangedData(
            name=name,
            namespace="istio-system",
            state=state,
            observed_generation=generation,
            declaration_generation=generation,
            serial_number=f"0{generation}" if not_after else None,
            not_after=not_after,
        ),
    )


def issuances(count: int) -> list[StatusChanged]:
    """`count` issuances one after another, each REQUESTED, ISSUED, FINISHED."""
    reports = []
    for n in range(1, count + 1):
        expires = dt.datetime(2027, 1, n, tzinfo=dt.UTC)
        for step in STEPS:
            done = step is not CertificateState.REQUESTED
            reports.append(
                report(
                    step,
                    issuance=f"issuance-{n}",
                    generation=n,
                    not_after=expires if done else None,
                )
            )
    return reports


def status_written(event: InformerEvent) -> bool:
    """A write of the mirror (not of the liveness check's lastSeenTime / renewalTime)."""
    if event.type is not EventType.MODIFIED or event.old is None:
        return False
    mirrored = ("state", "error", "issuanceId", "notAfter", "serialNumber", "observedGeneration")
    old, new = event.old.get("status") or {}, event.object.get("status") or {}
    return any(old.get(f) != new.get(f) for f in mirrored)


async def declared(kube: KubeClient) -> IssuedCertificate:
    raw = await kube.get(ISSUED_CERTIFICATES, "istio-ca", namespace="east")
    return IssuedCertificate.from_object(raw)


def test_a_batch_folds_like_one_write_after_another_and_keeps_the_guards() -> None:
    reports = issuances(3)
    one_by_one = IssuedCertificateStatus()
    for event in reports:
        one_by_one = mirrored_status(one_by_one, event.data, issuance=event.issuance)
    assert folded_status(IssuedCertificateStatus(), reports) == one_by_one
    assert one_by_one.state is State.FINISHED
    assert one_by_one.issuance_id == "issuance-3"
    # out of order within one batch: late steps and older generations change nothing
    late = [*reversed(reports)]
    folded = folded_status(IssuedCertificateStatus(), late)
    assert folded.issuance_id == "issuance-3"
    assert folded.state is State.FINISHED
    assert folded.observed_generation == 3


@pytest.mark.parametrize(
    ("before", "after", "event"),
    [
        pytest.param("PENDING", "REQUESTED", False, id="a step: not on mgmt"),
        pytest.param("REQUESTED", "ISSUED", False, id="another step"),
        pytest.param("REQUESTED", "FINISHED", True, id="finished"),
        pytest.param("FINISHED", "FINISHED", False, id="the same issuance again"),
        pytest.param("ISSUED", "FAILED", True, id="failed"),
        pytest.param(None, "FINISHED", True, id="over an unreadable status"),
    ],
)
def test_the_mirror_announces_only_what_a_management_user_acts_on(
    before: str | None, after: str, event: bool
) -> None:
    old = IssuedCertificateStatus(state=State(before), issuance_id="a") if before else None
    assert announced(old, IssuedCertificateStatus(state=State(after), issuance_id="a")) is event
    # a new issuance reaching FINISHED again is announced again, once
    done = IssuedCertificateStatus(state=State.FINISHED, issuance_id="a")
    assert announced(done, done.model_copy(update={"issuance_id": "b"}))


async def watch_status_writes(
    kube: KubeClient, writes: list[InformerEvent]
) -> tuple[Informer, asyncio.Task[None]]:
    """Append every status write of east's declarations to `writes`, from a watch (synced when
    this returns); cancel the task to stop."""
    informer = Informer(kube, ISSUED_CERTIFICATES, namespace="east")
    informer.add_handler(lambda event: writes.append(event) if status_written(event) else None)
    watching = asyncio.create_task(informer.run())
    await informer.wait_synced()
    return informer, watching


async def test_reports_of_one_declaration_handled_together_make_fewer_writes(
    tmp_path: Path, nats_settings: NatsSettings
) -> None:
    reports = issuances(3)  # nine reports
    async with world(tmp_path, nats_settings) as w:
        await w.create(declaration("east", "istio-ca"))
        writes: list[InformerEvent] = []
        _, watching = await watch_status_writes(w.kube, writes)
        # Stored before the issuer starts: its consumer takes them in one fetch, handled at once.
        for event in reports:
            await w.bus.publish(event)
        settings = w.settings(liveness_interval=3600.0)
        async with running(settings):

            async def drained() -> bool:
                try:
                    info = await w.bus.connection.js.consumer_info("MESHTRUST", "issuer-status")
                except nats.js.errors.NotFoundError:  # the issuer has not made it yet
                    return False
                return (
                    info.num_pending == 0
                    and info.num_ack_pending == 0
                    and info.delivered.consumer_seq >= len(reports)
                )

            await eventually(drained, within=20, message="every report handled and acked")
            stored = (await declared(w.kube)).status
            assert stored.state is State.FINISHED
            assert stored.issuance_id == "issuance-3"
            assert stored.observed_generation == 3
            assert stored.not_after == dt.datetime(2027, 1, 3, tzinfo=dt.UTC)
            await eventually(lambda: writes, message="the write seen through the watch")
            assert 1 <= len(writes) < len(reports), [e.object.get("status") for e in writes]
            events = await w.kube.list(EVENTS, namespace="east")
            mine = [
                e
                for e in events.items
                if e["involvedObject"].get("name") == "istio-ca"
                and e.get("reportingComponent") == "meshtrust-issuer"
            ]
            # only the states a management-side user acts on, never one per report
            assert 1 <= sum(e.get("count", 1) for e in mine) <= len(writes)
            assert {e["reason"] for e in mine} == {"Finished"}
        watching.cancel()


async def test_a_failed_write_fails_every_report_folded_into_it(
    tmp_path: Path, nats_settings: NatsSettings
) -> None:
    """None is acked unwritten: the reports that joined a write which failed fail with it (the
    consumer naks them all), and are written when delivered again."""
    reports = issuances(2)
    async with world(tmp_path, nats_settings) as w:
        await w.create(declaration("east", "istio-ca"))
        recorder = EventRecorder(w.kube, component="meshtrust-issuer", instance="issuer-a")
        mirror = StatusMirror(w.kube, recorder=recorder)
        w.api.faults.fail_next(1000, 500, path_contains="/istio-ca")
        outcomes: list[Any] = await asyncio.gather(
            *(mirror.mirror(event) for event in reports), return_exceptions=True
        )
        assert all(isinstance(o, TransientError) for o in outcomes), outcomes
        assert mirror.writes < len(reports)
        w.api.faults.clear()
        assert (await declared(w.kube)).status.state is State.PENDING
        outcomes = await asyncio.gather(*(mirror.mirror(event) for event in reports))
        stored = (await declared(w.kube)).status
        assert stored.state is State.FINISHED
        assert stored.issuance_id == "issuance-2"
        assert mirror.writes < 2 * len(reports)
        assert ObjectKey("east", "istio-ca") not in mirror._waiting


async def test_an_issued_report_waits_for_its_finished_and_is_written_alone_if_none_comes(
    tmp_path: Path, nats_settings: NatsSettings
) -> None:
    requested, issued, finished = issuances(1)
    async with world(tmp_path, nats_settings) as w:
        await w.create(declaration("east", "istio-ca"))
        writes: list[InformerEvent] = []
        informer, watching = await watch_status_writes(w.kube, writes)
        recorder = EventRecorder(w.kube, component="meshtrust-issuer", instance="issuer-a")
        # a long wait: only FINISHED's arrival can end it within the test's time
        mirror = StatusMirror(w.kube, recorder=recorder, cached=informer.get, linger=3600)
        await mirror.mirror(requested)
        waiting = asyncio.create_task(mirror.mirror(issued))
        await eventually(lambda: mirror._waiting, message="ISSUED waiting for its successor")
        await asyncio.wait_for(mirror.mirror(finished), 20)
        await asyncio.wait_for(waiting, 20)  # acked with the write that included it
        await eventually(lambda: len(writes) == 2, message="REQUESTED, then FINISHED written")
        states = [(e.object.get("status") or {}).get("state") for e in writes]
        assert states == ["REQUESTED", "FINISHED"]
        assert mirror.writes == 2

        # an ISSUED nothing follows is written once its wait is over
        second = issuances(2)[3:5]
        quick = StatusMirror(w.kube, recorder=recorder, cached=informer.get, linger=0.05)
        for event in second:
            await asyncio.wait_for(quick.mirror(event), 20)
        stored = (await declared(w.kube)).status
        assert stored.state is State.ISSUED
        assert stored.issuance_id == "issuance-2"
        events = await w.kube.list(EVENTS, namespace="east")
        reasons = sorted(
            e["reason"] for e in events.items if e["involvedObject"]["name"] == "istio-ca"
        )
        assert reasons == ["Finished"]

        # with a PodBounceDirective, FINISHED waits for the bounce: ISSUED is written at once
        await w.create(declaration("east", "bounced", bounce="istiod-bounce"))
        await eventually(lambda: informer.get(ObjectKey("east", "bounced")), message="cached")
        third = issuances(3)[7].model_copy(
            update={"data": issued.data.model_copy(update={"name": "bounced"})}
        )
        await asyncio.wait_for(mirror.mirror(third), 20)  # its linger is an hour
        raw = await w.kube.get(ISSUED_CERTIFICATES, "bounced", namespace="east")
        assert IssuedCertificate.from_object(raw).status.state is State.ISSUED
        watching.cancel()
