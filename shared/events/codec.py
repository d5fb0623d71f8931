"""Bytes <-> events. Decoding checks everything a consumer must not trust.

`decode` refuses, each with a distinct reason (`InvalidEvent.reason`): a message over the size
limit, bytes that are not UTF-8 JSON, an unknown event type, JSON that does not fit the model, and
an envelope whose cluster or type disagrees with the subject it arrived on. Reasons and messages
name the field at fault but never echo the payload (it could hold anything).
"""

from __future__ import annotations

import json

from pydantic import TypeAdapter, ValidationError

from shared.events.enums import EventType
from shared.events.models import Envelope, Event
from shared.events.names import InvalidName
from shared.events.subjects import PREFIX, parse_subject

DEFAULT_MAX_BYTES = 256 * 1024
"""Consumers refuse larger messages (nats-server's own max_payload is 1 MiB)."""

_EVENT = TypeAdapter[Event](Event)


class InvalidEvent(ValueError):
    """A message that can never be handled: terminate it and log `reason` and `message`."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message


def encode(event: Envelope) -> bytes:
    """Compact JSON, UTF-8."""
    return event.model_dump_json().encode()


def decode(data: bytes, *, subject: str | None = None, max_bytes: int = DEFAULT_MAX_BYTES) -> Event:
    """Parse and validate one message; `subject`, when given, must agree with the envelope."""
    if len(data) > max_bytes:
        raise InvalidEvent("TooLarge", f"message of {len(data)} bytes exceeds {max_bytes}")
    try:
        event = _EVENT.validate_json(data)  # the fast path: pydantic-core parses and validates
    except ValidationError as exc:
        raise _classify(data, exc) from None
    if subject is not None:
        _check_subject(event, subject)
    return event


def _classify(data: bytes, exc: ValidationError) -> InvalidEvent:
    """Say precisely why `data` is not an event (the slow path, for refused messages only)."""
    try:
        raw = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        return InvalidEvent("NotJson", f"payload is not UTF-8 JSON ({type(error).__name__})")
    if not isinstance(raw, dict):
        return InvalidEvent("NotAnObject", "payload is JSON but not an object")
    kind = raw.get("type")
    if kind not in EventType._value2member_map_:
        return InvalidEvent("UnknownType", f"unknown event type {str(kind)[:64]!r}")
    return InvalidEvent("SchemaMismatch", _describe(exc))


def _check_subject(event: Event, subject: str) -> None:
    if subject == f"{PREFIX}.{event.cluster}.{event.type.value}":
        return  # the common case, without parsing (the envelope's cluster is validated)
    try:
        cluster, kind = parse_subject(subject)
    except InvalidName as exc:
        raise InvalidEvent("BadSubject", str(exc)) from None
    if kind != event.type:
        raise InvalidEvent(
            "SubjectMismatch", f"event of type {event.type.value} arrived on {subject}"
        )
    if cluster != event.cluster:
        raise InvalidEvent(
            "SubjectMismatch",
            f"event about cluster {event.cluster!r} arrived on cluster {cluster!r}'s subject",
        )


def _describe(exc: ValidationError) -> str:
    """Field paths and error kinds only; pydantic's own text would echo the input."""
    parts = []
    for error in exc.errors(include_input=False, include_url=False)[:5]:
        where = ".".join(str(p) for p in error["loc"]) or "<root>"
        parts.append(f"{where}: {error['msg']}")
    more = exc.error_count() - len(parts)
    if more > 0:
        parts.append(f"and {more} more")
    return "; ".join(parts)
