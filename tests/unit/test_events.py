"""The wire contract: names, subjects, desired-state keys, the codec, committed schemas."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from shared.events import (
    EVENT_MODELS,
    CertificateState,
    DesiredKind,
    DesiredObject,
    EventType,
    InvalidEvent,
    InvalidName,
    StatusChanged,
    StatusChangedData,
    any_cluster,
    check_cluster_name,
    cluster_events,
    cluster_prefix,
    decode,
    desired_key,
    encode,
    parse_desired_key,
    parse_subject,
    subject,
)
from shared.events.schemas import render
from support.events import sample_events

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    "name",
    ["east", "a", "cluster-1", "0east", "x" * 63],
    ids=["plain", "one letter", "with a dash", "leading digit", "63 characters"],
)
def test_valid_cluster_names_are_accepted(name: str) -> None:
    assert check_cluster_name(name) == name


@pytest.mark.parametrize(
    "name",
    ["", "East", "east.1", "east*", "east>", "-east", "east-", "x" * 64, "ea st", "east_1"],
    ids=[
        "empty",
        "upper case",
        "a dot would split the subject token",
        "a NATS wildcard",
        "a NATS tail wildcard",
        "leading dash",
        "trailing dash",
        "64 characters",
        "a space",
        "underscore",
    ],
)
def test_invalid_cluster_names_are_refused_with_a_reason(name: str) -> None:
    with pytest.raises(InvalidName, match="cluster name"):
        check_cluster_name(name)


def test_subjects_put_the_cluster_right_after_the_version() -> None:
    assert subject("east", EventType.CSR_REQUESTED) == "meshtrust.v1.east.csr.requested"
    assert any_cluster(EventType.STATUS_CHANGED) == "meshtrust.v1.*.status.changed"
    assert cluster_events("west") == "meshtrust.v1.west.>"


@pytest.mark.parametrize("event", list(EventType), ids=lambda e: e.value)
def test_every_subject_parses_back(event: EventType) -> None:
    assert parse_subject(subject("west", event)) == ("west", event)


@pytest.mark.parametrize(
    "value",
    [
        "other.v1.east.csr.requested",
        "meshtrust.v1.east.csr.exploded",
        "meshtrust.v1.EAST.csr.requested",
    ],
    ids=["foreign prefix", "unknown event", "invalid cluster token"],
)
def test_foreign_subjects_are_refused(value: str) -> None:
    with pytest.raises(InvalidName):
        parse_subject(value)


def test_desired_keys_round_trip_names_with_dots() -> None:
    key = desired_key("east", DesiredKind.ISSUED_CERTIFICATE, "istio.ca.v2")
    assert key == "east.issuedcertificates.istio.ca.v2"
    assert parse_desired_key(key) == ("east", DesiredKind.ISSUED_CERTIFICATE, "istio.ca.v2")
    assert cluster_prefix("east") == "east.>"


@pytest.mark.parametrize(
    "key",
    ["east", "east.issuedcertificates", "east.secrets.x", "EAST.issuedcertificates.x", "e.pods.X"],
    ids=["no kind", "no name", "unknown kind", "bad cluster", "bad name"],
)
def test_malformed_desired_keys_are_refused(key: str) -> None:
    with pytest.raises(InvalidName):
        parse_desired_key(key)


def test_desired_object_forbids_unknown_fields() -> None:
    good = {
        "cluster": "east",
        "kind": "issuedcertificates",
        "name": "ca",
        "namespace": "istio-system",
        "uid": "u",
        "generation": 1,
        "spec": {},
    }
    assert DesiredObject.model_validate(good).generation == 1
    with pytest.raises(ValidationError):
        DesiredObject.model_validate({**good, "surprise": True})


@pytest.mark.parametrize("event", sample_events(), ids=lambda e: e.type.value)
def test_every_event_round_trips_through_the_codec(event: StatusChanged) -> None:
    decoded = decode(encode(event), subject=subject(event.cluster, event.event_type))
    assert decoded == event
    assert type(decoded) is EVENT_MODELS[event.event_type]


def test_events_are_frozen() -> None:
    event = sample_events()[0]
    with pytest.raises(ValidationError):
        event.cluster = "west"  # type: ignore[misc]


def _status(**changes: object) -> StatusChanged:
    data = StatusChangedData(
        name="ca", namespace="istio-system", state=CertificateState.REQUESTED, observed_generation=1
    )
    return StatusChanged(
        source="agent/east", cluster="east", issuance="i" * 16, data=data, **changes
    )  # type: ignore[arg-type]


def test_dedupe_keys_follow_the_issuance() -> None:
    events = sample_events(issuance="abcdef0123456789")
    csr, issued = events[0], events[1]
    assert csr.dedupe_key() == "abcdef0123456789:csr.requested:1"
    assert issued.dedupe_key() == "abcdef0123456789:certificate.issued:1"
    resend = csr.model_copy(update={"data": csr.data.model_copy(update={"attempt": 2})})  # type: ignore[attr-defined]
    assert resend.dedupe_key() != csr.dedupe_key(), "a timed re-send must not be deduplicated"
    assert _status().dedupe_key() != _status().dedupe_key(), "every status change is its own fact"
    bounce_request, bounce_answer = events[3], events[4]
    again = sample_events(issuance="abcdef0123456789")
    assert bounce_request.dedupe_key() != again[3].dedupe_key(), "a bounce may be asked again"
    assert bounce_answer.dedupe_key() != again[4].dedupe_key(), "a later answer is not a repeat"


def _valid_json() -> dict[str, object]:
    return json.loads(encode(sample_events()[0]))


@pytest.mark.parametrize(
    ("payload", "subject_", "reason"),
    [
        (b"\xff\xfe not json", None, "NotJson"),
        (b"{not json", None, "NotJson"),
        (b"[1, 2]", None, "NotAnObject"),
        (json.dumps({**_valid_json(), "type": "csr.exploded"}).encode(), None, "UnknownType"),
        (json.dumps({**_valid_json(), "extra": 1}).encode(), None, "SchemaMismatch"),
        (json.dumps({**_valid_json(), "cluster": "Bad.Cluster"}).encode(), None, "SchemaMismatch"),
        (json.dumps({**_valid_json(), "schema_version": 2}).encode(), None, "SchemaMismatch"),
        (json.dumps({**_valid_json(), "data": {}}).encode(), None, "SchemaMismatch"),
        (encode(sample_events("east")[0]), "meshtrust.v1.west.csr.requested", "SubjectMismatch"),
        (encode(sample_events("east")[0]), "meshtrust.v1.east.status.changed", "SubjectMismatch"),
        (encode(sample_events("east")[0]), "elsewhere.csr", "BadSubject"),
        (b" " * (256 * 1024 + 1), None, "TooLarge"),
    ],
    ids=[
        "bytes that are not UTF-8",
        "text that is not JSON",
        "JSON that is not an object",
        "an unknown event type",
        "an unknown field",
        "an invalid cluster name",
        "a schema version from the future",
        "data of the wrong shape",
        "a cluster other than the subject's",
        "a type other than the subject's",
        "a subject that is not ours",
        "a message over the size limit",
    ],
)
def test_decode_refuses_bad_input_with_a_distinct_reason(
    payload: bytes, subject_: str | None, reason: str
) -> None:
    with pytest.raises(InvalidEvent) as caught:
        decode(payload, subject=subject_)
    assert caught.value.reason == reason


def test_decode_errors_do_not_echo_the_payload() -> None:
    marker = "PRIVATE" + " KEY"  # no key-shaped header written in the tree
    secret = f"-----BEGIN {marker}-----MIIEv-----END {marker}-----"
    bad = {**_valid_json(), "data": {"csr_pem": 1, "smuggled": secret}}
    with pytest.raises(InvalidEvent) as caught:
        decode(json.dumps(bad).encode())
    assert marker not in str(caught.value)
    assert "data.CsrRequestedData.smuggled" in str(caught.value) or "smuggled" in str(caught.value)


def test_committed_event_schemas_are_current() -> None:
    """`make schemas` regenerates docs/events/; this fails when someone forgot to."""
    committed = {p.name: p.read_text() for p in (REPO / "docs" / "events").glob("*.json")}
    assert committed == render(), "docs/events/ is stale: run `make schemas` and commit"
