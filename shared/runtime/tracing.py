"""W3C Trace Context (https://www.w3.org/TR/trace-context/): parsing, formatting, child spans.

One issuance crosses three services over the bus. Every published event carries a
`traceparent` header (`00-<trace-id>-<span-id>-<flags>`, and `tracestate` passed through when
the trace came with one); the consumer makes the incoming context current while its handler
runs, and whatever that handler publishes carries a child of it: the same trace id, a new span
id. The current context is a contextvar, so each message's task has its own.

An event published outside any handling (the agent's reconciler sends `csr.requested`) starts
a trace whose id is derived from the issuance id (`trace_id_for`): a CSR re-sent after a
restart continues the trace the first send began, and every later hop follows it.

Parsing is strict, as the specification asks of a receiver: lower-case hex only, the exact
field lengths, version `ff` refused, all-zero trace or span ids refused; a version above 00 is
read by its first four fields as the specification says. Pure code: `shared.runtime.otel` adds
OpenTelemetry spans where an exporter is configured, `shared.bus` carries the headers.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Mapping
from contextvars import ContextVar, Token
from dataclasses import dataclass, replace

TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"

SAMPLED = 0x01
"""The only trace flag version 00 defines."""
MAX_TRACESTATE = 512
"""The length every receiver must accept; a longer `tracestate` is dropped, not cut."""

_FIELDS = re.compile(r"^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
_V00_LENGTH = 55
_ZERO_TRACE = "0" * 32
_ZERO_SPAN = "0" * 16
# Printable ASCII but no control characters: what a list-member may hold, in one header line.
_TRACESTATE = re.compile(r"^[\x20-\x7e]*$")
_ISSUANCE_INFO = b"meshtrust trace-id v1\n"


class InvalidTraceparent(ValueError):
    """A `traceparent` the specification says to ignore; the message says why."""


@dataclass(frozen=True, slots=True)
class SpanContext:
    """One span of a trace: what a `traceparent` names, plus the span it came from."""

    trace_id: str
    """32 lower-case hex digits, not all zero."""
    span_id: str
    """16 lower-case hex digits, not all zero."""
    flags: int = SAMPLED
    parent_id: str | None = None
    """The span this one is a child of, if known (not carried on the wire)."""
    tracestate: str | None = None
    """Vendors' state, passed through unchanged."""

    @property
    def traceparent(self) -> str:
        return f"00-{self.trace_id}-{self.span_id}-{self.flags:02x}"

    @property
    def sampled(self) -> bool:
        return bool(self.flags & SAMPLED)

    def child(self, span_id: str | None = None) -> SpanContext:
        """A span whose parent is this one: same trace, flags and tracestate, a new span id."""
        return replace(self, span_id=span_id or new_span_id(), parent_id=self.span_id)

    def headers(self) -> dict[str, str]:
        """The headers that carry this span to the next hop."""
        headers = {TRACEPARENT: self.traceparent}
        if self.tracestate:
            headers[TRACESTATE] = self.tracestate
        return headers

    def log_fields(self) -> dict[str, str]:
        """What every log line written in this span carries (structlog contextvars)."""
        fields = {"trace_id": self.trace_id, "span_id": self.span_id}
        if self.parent_id is not None:
            fields["parent_span_id"] = self.parent_id
        return fields


def parse_traceparent(value: str, tracestate: str | None = None) -> SpanContext:
    """The remote span a `traceparent` names; raises `InvalidTraceparent` saying why it must
    be ignored. `tracestate` is kept when it is well-formed enough to pass on, else dropped."""
    match = _FIELDS.match(value)
    if match is None:
        raise InvalidTraceparent(f"not version-traceid-parentid-flags in lower-case hex: {value!r}")
    version, trace_id, span_id, flags = match.groups()
    if version == "ff":
        raise InvalidTraceparent("version ff is invalid")
    if version == "00" and len(value) != _V00_LENGTH:
        raise InvalidTraceparent(f"version 00 is {_V00_LENGTH} characters, not {len(value)}")
    if len(value) > _V00_LENGTH and value[_V00_LENGTH] != "-":
        raise InvalidTraceparent("a later version's extra fields must follow a '-'")
    if trace_id == _ZERO_TRACE:
        raise InvalidTraceparent("the trace id is all zeros")
    if span_id == _ZERO_SPAN:
        raise InvalidTraceparent("the parent id is all zeros")
    flag_bits = int(flags, 16)
    if version != "00":
        flag_bits &= SAMPLED  # a later version's other flags mean nothing to this version
    return SpanContext(trace_id, span_id, flag_bits, tracestate=_valid_tracestate(tracestate))


def _valid_tracestate(value: str | None) -> str | None:
    if value is None:
        return None
    value = value.strip(" \t")
    if not value or len(value) > MAX_TRACESTATE or _TRACESTATE.match(value) is None:
        return None
    return value


def from_headers(headers: Mapping[str, str] | None) -> SpanContext | None:
    """The remote span of a message's headers; None when there is none, or it is malformed
    (raises `InvalidTraceparent` then, for the caller to log)."""
    if not headers:
        return None
    value = headers.get(TRACEPARENT)
    if value is None:
        return None
    return parse_traceparent(value, headers.get(TRACESTATE))


def new_trace_id() -> str:
    """A random trace id (128 bits; all zeros is invalid, and drawn again)."""
    while (value := secrets.token_hex(16)) == _ZERO_TRACE:  # pragma: no cover - 2**-128
        pass
    return value


def new_span_id() -> str:
    """A random span id (64 bits, never all zeros)."""
    while (value := secrets.token_hex(8)) == _ZERO_SPAN:  # pragma: no cover - 2**-64
        pass
    return value


def trace_id_for(issuance: str) -> str:
    """The trace id of an issuance's trace: equal for every send of its events outside a
    handler (a re-sent CSR after a restart continues the trace), and unlike any other's."""
    # 2**-128 that it is all zeros (invalid): not worth a branch no test could reach.
    return hashlib.sha256(_ISSUANCE_INFO + issuance.encode()).hexdigest()[:32]


def start_trace(issuance: str | None = None) -> SpanContext:
    """The first span of a trace: its id from the issuance when there is one, else random."""
    trace_id = trace_id_for(issuance) if issuance else new_trace_id()
    return SpanContext(trace_id, new_span_id())


_current: ContextVar[SpanContext | None] = ContextVar("meshtrust_span", default=None)


def current() -> SpanContext | None:
    """The span of the message being handled in this task, if any."""
    return _current.get()


def set_current(span: SpanContext | None) -> Token[SpanContext | None]:
    """Make `span` current; returns the token that `reset_current` takes."""
    return _current.set(span)


def reset_current(token: Token[SpanContext | None]) -> None:
    _current.reset(token)
