"""Nothing undecodable crashes: every decoder of bytes from the bus or a bucket is total.

`shared.events.decode` returns an event or raises `InvalidEvent`; `decode_value` returns the
record or an `Undecodable`. Hypothesis throws at them what an attacker (or a reply-subject
injection) can put on a subject or into a key: arbitrary bytes, ~200 KB of nested brackets,
numbers past Python's int-string limit, invalid UTF-8, JSON of every wrong type, NaN and
Infinity, and valid envelopes with one field replaced by any JSON value. Then the poison on a
running issuer's consumers: terminated with a logged reason, and the next CSR is signed.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from issuer.issuer_testing import declaration, running, world
from structlog.testing import capture_logs

from services.issuer.issued import IssuedRecord
from services.issuer.ledger import LedgerEntry
from shared.bus import NatsSettings
from shared.events import (
    DEFAULT_MAX_BYTES,
    DesiredObject,
    InvalidEvent,
    Undecodable,
    decode,
    decode_value,
    encode,
)
from support.events import sample_events
from support.waiting import eventually

NESTED = b"[" * 100_000 + b"]" * 100_000
"""~200 KB of nested arrays: what crashed the issuer (RecursionError in the classification)."""

POISONS: list[tuple[str, bytes]] = [
    ("deeply nested arrays", NESTED),
    ("deeply nested objects", b'{"a":' * 40_000 + b"1" + b"}" * 40_000),
    ("unterminated nesting", b"[" * 200_000),
    ("nesting inside a valid-looking envelope", b'{"type":"csr.requested","data":' + NESTED + b"}"),
    ("an integer of 5,000 digits", b"9" * 5_000),
    (
        "a huge integer in a field",
        b'{"type":"csr.requested","schema_version":' + b"7" * 5000 + b"}",
    ),
    ("a float that overflows", b'{"type":"csr.requested","schema_version":1e999}'),
    ("NaN", b'{"type":"status.changed","schema_version":NaN}'),
    ("Infinity", b"[Infinity, -Infinity]"),
    ("invalid UTF-8", b'{"type":"csr.requested","source":"\xff\xfe"}'),
    ("a lone surrogate escape", b'{"type":"\\ud800"}'),
    ("a NATS PubAck (reply-subject injection)", b'{"stream":"MESHTRUST","seq":42}'),
    ("empty", b""),
    ("a JSON string", b'"csr.requested"'),
    ("null", b"null"),
    ("a type that is an object", b'{"type":{"type":"csr.requested"}}'),
    ("duplicate keys", b'{"type":"csr.requested","type":"certificate.issued"}'),
]

RECORD_MODELS: list[type[Any]] = [DesiredObject, IssuedRecord, LedgerEntry]

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=40),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)


def _dumps(value: Any) -> bytes:
    # json.dumps writes NaN/Infinity as the non-standard tokens: both kinds get tried.
    return json.dumps(value).encode()


def decode_totally(data: bytes, subject: str | None = None) -> None:
    """Decode; only `InvalidEvent` may come out, and its message never quotes a long payload."""
    try:
        event = decode(data, subject=subject)
    except InvalidEvent as exc:
        refused: InvalidEvent | None = exc
    else:
        refused = None
        assert encode(event)  # what decoded is a real event: it encodes again
    if refused is not None:
        assert refused.reason.isalnum(), refused.reason
        assert len(refused.message) < 2_000


def decode_value_totally(model: type[Any], data: bytes) -> None:
    outcome = decode_value(model, data)
    assert isinstance(outcome, model | Undecodable)
    if isinstance(outcome, Undecodable):
        assert outcome.reason.isalnum(), outcome.reason


@pytest.mark.parametrize(("name", "payload"), POISONS, ids=[name for name, _ in POISONS])
def test_each_poison_is_an_invalid_event_not_an_exception(name: str, payload: bytes) -> None:
    with pytest.raises(InvalidEvent) as caught:
        decode(payload, subject="meshtrust.v1.east.csr.requested")
    assert caught.value.reason in {"NotJson", "NotAnObject", "UnknownType", "SchemaMismatch"}


@pytest.mark.parametrize(("name", "payload"), POISONS, ids=[name for name, _ in POISONS])
@pytest.mark.parametrize("model", RECORD_MODELS, ids=lambda m: m.__name__)
def test_each_poison_is_an_undecodable_record_not_an_exception(
    model: type[Any], name: str, payload: bytes
) -> None:
    assert isinstance(decode_value(model, payload), Undecodable)


def test_nested_json_is_refused_as_not_json_naming_the_limit() -> None:
    with pytest.raises(InvalidEvent) as caught:
        decode(NESTED)
    assert caught.value.reason == "NotJson"
    assert "recursion limit" in caught.value.message


def test_an_oversized_record_is_refused_without_parsing() -> None:
    outcome = decode_value(DesiredObject, b" " * (DEFAULT_MAX_BYTES + 1))
    assert isinstance(outcome, Undecodable)
    assert outcome.reason == "TooLarge"


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=2_048))
def test_arbitrary_bytes_decode_or_are_invalid(data: bytes) -> None:
    decode_totally(data, subject="meshtrust.v1.east.csr.requested")
    for model in RECORD_MODELS:
        decode_value_totally(model, data)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(json_values)
def test_any_json_value_decodes_or_is_invalid(value: Any) -> None:
    data = _dumps(value)
    decode_totally(data)
    for model in RECORD_MODELS:
        decode_value_totally(model, data)


@settings(max_examples=40, deadline=None)
@given(
    depth=st.integers(min_value=50, max_value=120_000),
    opener=st.sampled_from([b"[", b'{"a":', b'{"type":"csr.requested","data":[']),
    closed=st.booleans(),
)
def test_nesting_of_any_depth_is_invalid_not_a_crash(
    depth: int, opener: bytes, closed: bool
) -> None:
    data = opener * depth
    if closed:
        data += b"1" + b"]}"[:1] * depth
    decode_totally(data[:DEFAULT_MAX_BYTES])
    decode_value_totally(DesiredObject, data[:DEFAULT_MAX_BYTES])


@settings(max_examples=60, deadline=None)
@given(digits=st.integers(min_value=1, max_value=20_000), negative=st.booleans())
def test_numbers_of_any_size_are_invalid_not_a_crash(digits: int, negative: bool) -> None:
    number = (b"-" if negative else b"") + b"9" * digits
    for data in (number, b'{"type":"csr.requested","schema_version":' + number + b"}"):
        decode_totally(data)
        decode_value_totally(IssuedRecord, data)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    index=st.integers(min_value=0, max_value=5),
    path=st.lists(
        st.sampled_from(
            [
                "type",
                "cluster",
                "data",
                "issuance",
                "time",
                "schema_version",
                "source",
                "trace",
                "id",
                "name",
                "attempt",
                "csr_pem",
                "state",
                "not_after",
                "serial_number",
                "directive",
                "selectors",
            ]
        ),
        min_size=1,
        max_size=2,
    ),
    replacement=json_values,
)
def test_a_valid_envelope_with_a_mutated_field_decodes_or_is_invalid(
    index: int, path: list[str], replacement: Any
) -> None:
    event = sample_events("east")[index]
    body: dict[str, Any] = json.loads(encode(event))
    target = body
    for part in path[:-1]:
        child = target.get(part)
        if not isinstance(child, dict):
            break
        target = child
    target[path[-1]] = replacement
    decode_totally(_dumps(body), subject=f"meshtrust.v1.east.{event.type.value}")


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    index=st.integers(min_value=0, max_value=5), cut=st.integers(min_value=0), flip=st.integers()
)
def test_a_valid_envelope_truncated_or_with_a_byte_flipped_decodes_or_is_invalid(
    index: int, cut: int, flip: int
) -> None:
    data = bytearray(encode(sample_events("east")[index]))
    data[flip % len(data)] ^= 0x80  # into invalid UTF-8, or out of it
    decode_totally(bytes(data))
    decode_totally(bytes(data[: cut % len(data)]))


def test_nan_and_infinity_never_pass_as_numbers() -> None:
    body: dict[str, Any] = json.loads(encode(sample_events("east")[0]))
    for bad in (math.nan, math.inf, -math.inf):
        body["data"]["attempt"] = bad
        with pytest.raises(InvalidEvent):
            decode(_dumps(body))


# --- the poison on a running issuer -----------------------------------------------------------


@pytest.mark.slow
async def test_nested_json_poison_is_terminated_and_the_issuer_keeps_signing(
    tmp_path: Path, nats_settings: NatsSettings
) -> None:
    async with world(tmp_path, nats_settings) as w, running(w.settings()):
        east = w.agent("east")
        created = await w.create(declaration("east", "istio-ca"))
        desired = await w.bus.bucket("meshtrust-desired")
        await eventually(
            lambda: desired.get("east.issuedcertificates.istio-ca"), message="the declaration"
        )
        js = w.bus.connection.js
        with capture_logs() as logs:
            for subject in ("meshtrust.v1.east.csr.requested", "meshtrust.v1.east.status.changed"):
                await js.publish(subject, NESTED, stream="MESHTRUST")

            def terminated() -> list[dict[str, Any]]:
                return [e for e in logs if e["event"] == "terminating invalid message"]

            await eventually(
                lambda: len(terminated()) == 2, message="both poisons terminated", within=30.0
            )
            # and the issuer still signs
            good = await east.send(east.request(created))
            await w.answers.issued(good.issuance)

        assert sorted(e["subject"] for e in terminated()) == [
            "meshtrust.v1.east.csr.requested",
            "meshtrust.v1.east.status.changed",
        ]
        assert {e["reason"] for e in terminated()} == {"NotJson"}
        assert all("recursion limit" in e["detail"] for e in terminated())
        for durable in ("csr-east", "issuer-status"):  # CSRs: a durable per cluster
            info = await js.consumer_info("MESHTRUST", durable)
            assert info.num_redelivered == 0, durable
