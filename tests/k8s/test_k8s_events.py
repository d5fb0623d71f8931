"""Kubernetes Events: recorded about an object, repeats aggregated, failures swallowed."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from k8s.harness import issued_certificate
from shared.api.v1alpha2 import IssuedCertificate, State
from shared.k8s.client import KubeClient
from shared.k8s.events import EventRecorder, event_name, transition_reason
from shared.k8s.resources import EVENTS, ISSUED_CERTIFICATES

pytestmark = pytest.mark.usefixtures("crds")


@pytest.mark.parametrize(
    ("state", "reason"),
    [
        pytest.param(State.REQUESTED, "Requested", id="requested"),
        pytest.param(State.ISSUED, "Issued", id="issued"),
        pytest.param(State.FINISHED, "Finished", id="finished"),
        pytest.param(State.FAILED, "Failed", id="failed"),
    ],
)
def test_transition_reasons_are_the_state_in_camel_case(state: State, reason: str) -> None:
    assert transition_reason(state) == reason


def test_events_are_named_as_client_go_names_them() -> None:
    when = datetime(2026, 1, 1, 0, 0, 0, 123456, tzinfo=UTC)
    nanos = int(when.timestamp()) * 10**9 + 123456 * 1000
    assert event_name("istio", when) == f"istio.{nanos:x}"


async def test_a_transition_is_recorded_about_the_object(kube: KubeClient, namespace: str) -> None:
    raw = await kube.create(ISSUED_CERTIFICATES, issued_certificate("ic", namespace))
    ic = IssuedCertificate.from_object(raw)
    recorder = EventRecorder(kube, component="meshtrust-agent", instance="agent-0")
    await recorder.transition(
        ic, old=State.PENDING, new=State.FAILED, message="CSR denied: org mismatch"
    )
    await recorder.transition(ic, old=State.FAILED, new=State.FAILED, message="no change, no event")
    events = (await kube.list(EVENTS, namespace=namespace)).items
    assert len(events) == 1
    event = events[0]
    assert event["type"] == "Warning"
    assert event["reason"] == "Failed"
    assert event["message"] == "CSR denied: org mismatch"
    assert event["involvedObject"]["kind"] == "IssuedCertificate"
    assert event["involvedObject"]["name"] == "ic"
    assert event["involvedObject"]["uid"] == raw["metadata"]["uid"]
    assert event["source"]["component"] == "meshtrust-agent"
    assert event["metadata"]["name"].startswith("ic.")


async def test_a_repeated_event_bumps_the_count_of_the_first(
    kube: KubeClient, namespace: str
) -> None:
    raw = await kube.create(ISSUED_CERTIFICATES, issued_certificate("ic", namespace))
    recorder = EventRecorder(kube, component="meshtrust-agent")
    for _ in range(3):
        await recorder.record(raw, type="Normal", reason="Requested", message="CSR published")
    await recorder.record(raw, type="Normal", reason="Issued", message="certificate received")
    events = sorted((await kube.list(EVENTS, namespace=namespace)).items, key=lambda e: e["reason"])
    assert [(e["reason"], e["count"]) for e in events] == [("Issued", 1), ("Requested", 3)]


async def test_an_event_that_cannot_be_written_is_dropped_quietly(kube: KubeClient) -> None:
    recorder = EventRecorder(kube, component="meshtrust-agent")
    ghost = issued_certificate("ic", "no-such-namespace")
    await recorder.record(ghost, type="Normal", reason="Requested", message="lost")  # no raise
