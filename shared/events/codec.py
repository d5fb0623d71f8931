"""Bytes <-> events. Decoding checks everything a consumer must not trust.

`decode` refuses, each with a distinct reason (`InvalidEvent.reason`): a message over the size
limit, bytes that are not UTF-8 JSON (nesting too deep and numbers too big included), JSON that
is not an object, an unknown event type, JSON that does not fit the model, and an envelope whose
cluster or type disagrees with the subject it arrived on. Reasons and messages name the field at
fault but never echo the payload (it could hold anything).

`decode_value` does the same for the JSON records kept in KV buckets (desired state, issued
records): it returns the model or an `Undecodable` saying why, never raises.

Both are total: whatever the bytes, the result is the model or the documented refusal, never
another exception. The bytes are parsed once, by pydantic-core (whose parser limits nesting and
refuses out-of-range numbers); the refusal is classified from pydantic's own error list, never
by parsing the payload a second time with another parser (`json.loads` raised `RecursionError`
on ~200 KB of nested brackets, and `ValueError` on a 5,000-digit integer).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from pydantic import BaseModel, TypeAdapter, ValidationError

from shared.events.models import Envelope, Event
from shared.events.names import InvalidName
from shared.events.subjects import PREFIX, parse_subject
from shared.runtime.errors import InvalidInput

DEFAULT_MAX_BYTES = 256 * 1024
"""Consumers refuse larger messages (nats-server's own max_payload is 1 MiB)."""

_EVENT = TypeAdapter[Event](Event)


class InvalidEvent(InvalidInput, ValueError):
    """A message that can never be handled: terminate it and log `reason` and `message`."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message


def encode(event: Envelope) -> bytes:
    """Compact JSON, UTF-8."""
    return event.model_dump_json().encode()


def decode(data: bytes, *, subject: str | None = None, max_bytes: int = DEFAULT_MAX_BYTES) -> Event:
    """Parse and validate one message; `subject`, when given, must agree with the envelope.

    Raises `InvalidEvent`, and nothing else, for any bytes that are not a valid event."""
    if len(data) > max_bytes:
        raise InvalidEvent("TooLarge", f"message of {len(data)} bytes exceeds {max_bytes}")
    outcome = _validate(_EVENT.validate_json, data)
    if isinstance(outcome, Undecodable):
        raise InvalidEvent(outcome.reason, outcome.message)
    if subject is not None:
        _check_subject(outcome, subject)
    return outcome


M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Undecodable:
    """Why stored bytes are not a valid record: `reason` (CamelCase) and `message`, neither of
    which quotes the bytes. Callers ignore the value with a logged reason; it never means
    "absent"."""

    reason: str
    message: str

    def __str__(self) -> str:
        return f"{self.reason}: {self.message}"


def decode_value(
    model: type[M], data: bytes | None, *, max_bytes: int = DEFAULT_MAX_BYTES
) -> M | Undecodable:
    """The record `model` stored as JSON `data` (a KV value), or why it is not one."""
    if data is None:
        return Undecodable("Empty", "no value")
    if len(data) > max_bytes:
        return Undecodable("TooLarge", f"value of {len(data)} bytes exceeds {max_bytes}")
    return _validate(model.model_validate_json, data)


def _validate(validate: Callable[[bytes], T], data: bytes) -> T | Undecodable:
    try:
        return validate(data)
    except ValidationError as exc:
        return _classify(exc)
    except (ValueError, TypeError, RecursionError) as exc:
        # Not seen from pydantic-core (its parser reports these as `json_invalid`); kept so
        # that the functions stay total whatever a future parser raises.
        return Undecodable("NotJson", f"payload cannot be parsed ({type(exc).__name__})")


def _classify(exc: ValidationError) -> Undecodable:
    """Say precisely why the bytes were refused, from pydantic's first error (the slow path,
    for refused payloads only)."""
    errors = exc.errors(include_input=False, include_url=False)
    if not errors:
        return Undecodable("SchemaMismatch", "refused without a reason")
    first = errors[0]
    kind, at_root, ctx = first["type"], not first["loc"], first.get("ctx") or {}
    if kind == "json_invalid":
        # pydantic-core's parser error: a position and a kind ("recursion limit exceeded",
        # "number out of range", "expected value"), never the payload itself.
        why = str(ctx.get("error") or "invalid")[:120]
        return Undecodable("NotJson", f"payload is not UTF-8 JSON ({why})")
    if at_root and kind in ("dict_type", "model_type", "model_attributes_type"):
        return Undecodable("NotAnObject", "payload is JSON but not an object")
    if at_root and kind in ("union_tag_invalid", "union_tag_not_found"):
        return Undecodable("UnknownType", f"unknown event type {str(ctx.get('tag'))[:64]!r}")
    return Undecodable("SchemaMismatch", _describe(exc))


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
