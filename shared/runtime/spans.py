"""The spans of the bus: handling a message, publishing an event. Trace context always;
OpenTelemetry spans only where an exporter is configured.

`handling(headers, ...)` runs a handler in the incoming message's trace: a span whose parent is
the message's `traceparent` (a new trace when it has none, or a malformed one, which is logged
at debug and otherwise ignored: never a failure of the message) is current, and `trace_id`,
`span_id` and `parent_span_id` are bound into structlog's contextvars for every log line
written meanwhile. `producing(...)` is a publish's span: a child of the current span, or, outside
any handling, the first span of the issuance's trace (`tracing.start_trace`); its `headers()`
go on the message.

OpenTelemetry is off by default and never imported then. It is on when `opentelemetry-sdk` is
installed (the `otel` extra) and `OTEL_TRACES_EXPORTER` names an exporter (`otlp`, `console`)
or `OTEL_EXPORTER_OTLP_ENDPOINT` is set (`otlp` then; it needs the OTLP exporter package).
Each handled message is then a CONSUMER span and each publish a PRODUCER span, with the
messaging semantic conventions' attributes, and the ids on the wire and in the logs are the
spans' own.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import structlog

from shared.runtime import tracing
from shared.runtime.logging import get_logger
from shared.runtime.tracing import SpanContext

if TYPE_CHECKING:
    from opentelemetry.trace import Tracer, TracerProvider

log = get_logger(__name__)

_UNSET = object()
_tracer: Any = _UNSET
"""The OpenTelemetry tracer, None when OpenTelemetry is off; decided on first use."""


def otel_configured(environ: Mapping[str, str] | None = None) -> bool:
    """Whether the environment asks for spans to be exported (the standard variables)."""
    env = os.environ if environ is None else environ
    exporter = env.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporter:
        return exporter != "none"
    return bool(env.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip())


def _tracer_or_none() -> Tracer | None:
    global _tracer  # one tracer per process, decided once
    if _tracer is _UNSET:
        _tracer = None
        if otel_configured():
            try:
                from shared.runtime.otel import provider_from_env  # only when on
            except ImportError as exc:
                log.warning(
                    "OpenTelemetry asked for but not installed (the otel extra); no spans",
                    missing=exc.name,
                )
                return None
            provider = provider_from_env()
            _tracer = provider.get_tracer("meshtrust") if provider is not None else None
    tracer: Tracer | None = _tracer
    return tracer


def use_tracer_provider(provider: TracerProvider | None) -> None:
    """Use `provider`'s tracer from now on (None: OpenTelemetry off); for tests, and for an
    application that configures OpenTelemetry itself."""
    global _tracer
    _tracer = provider.get_tracer("meshtrust") if provider is not None else None


def _remote(headers: Mapping[str, str] | None, subject: str) -> SpanContext | None:
    try:
        return tracing.from_headers(headers)
    except tracing.InvalidTraceparent as exc:
        log.debug(
            "ignoring a malformed traceparent; starting a new trace",
            subject=subject,
            error=str(exc),
        )
        return None


@contextmanager
def handling(
    headers: Mapping[str, str] | None, *, subject: str, consumer: str
) -> Iterator[SpanContext]:
    """The span of handling one message (see the module doc)."""
    remote = _remote(headers, subject)
    tracer = _tracer_or_none()
    if tracer is None:
        span = remote.child() if remote is not None else tracing.start_trace()
        with _current(span):
            yield span
        return
    from shared.runtime.otel import consumer_span  # only when on

    with consumer_span(tracer, remote, subject=subject, consumer=consumer) as span, _current(span):
        yield span


@contextmanager
def producing(subject: str, *, issuance: str | None) -> Iterator[SpanContext]:
    """The span of publishing one event on `subject` (see the module doc)."""
    parent = tracing.current()
    tracer = _tracer_or_none()
    if tracer is None:
        yield parent.child() if parent is not None else tracing.start_trace(issuance)
        return
    from shared.runtime.otel import producer_span  # only when on

    with producer_span(tracer, parent, subject=subject, issuance=issuance) as span:
        yield span


@contextmanager
def _current(span: SpanContext) -> Iterator[None]:
    token = tracing.set_current(span)
    try:
        with structlog.contextvars.bound_contextvars(**span.log_fields()):
            yield
    finally:
        tracing.reset_current(token)
