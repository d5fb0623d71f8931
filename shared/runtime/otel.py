"""OpenTelemetry spans for the bus, imported only where an exporter is configured
(`shared.runtime.spans` decides); needs `opentelemetry-sdk` (the `otel` extra).

The ids a span gets are the ids on the wire and in the logs: a consumer span's parent is the
message's `traceparent`, a producer span's parent the span current in its task; a producer span
with no parent starts the issuance's trace with the id `tracing.trace_id_for` derives (through
`IssuanceIds`, this provider's id generator), as it does without OpenTelemetry.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.trace import NonRecordingSpan, Span, SpanKind, TraceFlags, Tracer, TraceState

from shared.runtime import tracing
from shared.runtime.logging import get_logger
from shared.runtime.tracing import SpanContext

log = get_logger(__name__)

_wanted_trace_id: ContextVar[int | None] = ContextVar("meshtrust_wanted_trace_id", default=None)

# Where each OTLP exporter package keeps its span exporter (http first: fewer dependencies).
_OTLP = (
    "opentelemetry.exporter.otlp.proto.http.trace_exporter",
    "opentelemetry.exporter.otlp.proto.grpc.trace_exporter",
)


class IssuanceIds(RandomIdGenerator):
    """Random ids, except a root span's trace id when one was asked for (`producer_span`)."""

    def generate_trace_id(self) -> int:
        wanted = _wanted_trace_id.get()
        return wanted if wanted is not None else super().generate_trace_id()


def make_provider(*processors: SpanProcessor) -> TracerProvider:
    """A tracer provider with meshtrust's id generator, the resource of the environment
    (`OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`) and `processors`."""
    provider = TracerProvider(resource=Resource.create(), id_generator=IssuanceIds())
    for processor in processors:
        provider.add_span_processor(processor)
    return provider


def _exporter(name: str) -> SpanExporter | None:
    if name == "console":
        return ConsoleSpanExporter()
    if name == "otlp":
        for module in _OTLP:
            try:
                exporter: SpanExporter = importlib.import_module(module).OTLPSpanExporter()
            except ImportError:
                continue
            return exporter
        log.warning("OTLP traces asked for, but no OTLP exporter is installed (the otel extra)")
        return None
    log.warning("unknown OTEL_TRACES_EXPORTER entry ignored", exporter=name)
    return None


def provider_from_env() -> TracerProvider | None:
    """The provider the standard variables ask for; None when none of their exporters can be
    made (warned)."""
    names = os.environ.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower() or "otlp"
    exporters = [e for n in names.split(",") if n.strip() and (e := _exporter(n.strip()))]
    if not exporters:
        return None
    log.info("exporting OpenTelemetry spans", exporters=names)
    return make_provider(*(BatchSpanProcessor(e) for e in exporters))


def _parent_context(parent: SpanContext | None) -> Context:
    if parent is None:
        return Context()  # a root span, whatever OpenTelemetry context the task may have
    state = TraceState.from_header([parent.tracestate]) if parent.tracestate else None
    remote = trace.SpanContext(
        int(parent.trace_id, 16),
        int(parent.span_id, 16),
        is_remote=parent.parent_id is None,
        trace_flags=TraceFlags(parent.flags),
        trace_state=state,
    )
    return trace.set_span_in_context(NonRecordingSpan(remote))


def _ours(span: Span, parent: SpanContext | None, tracestate: str | None) -> SpanContext:
    ctx = span.get_span_context()
    return SpanContext(
        trace_id=f"{ctx.trace_id:032x}",
        span_id=f"{ctx.span_id:016x}",
        flags=int(ctx.trace_flags) & tracing.SAMPLED,
        parent_id=parent.span_id if parent is not None else None,
        tracestate=tracestate,
    )


def destination_template(subject: str) -> str:
    """The subject with its cluster token generalised: a bounded span name."""
    parts = subject.split(".")
    if len(parts) > 3 and parts[0] == "meshtrust" and parts[1] == "v1":
        parts[2] = "{cluster}"
    return ".".join(parts)


def _attributes(subject: str, operation: str) -> dict[str, str]:
    return {
        "messaging.system": "nats",
        "messaging.destination.name": subject,
        "messaging.destination.template": destination_template(subject),
        "messaging.operation.type": operation,
        "messaging.operation.name": operation,
    }


@contextmanager
def consumer_span(
    tracer: Tracer, remote: SpanContext | None, *, subject: str, consumer: str
) -> Iterator[SpanContext]:
    """A CONSUMER span for handling one message, current in OpenTelemetry's context too."""
    attributes = _attributes(subject, "process") | {"messaging.consumer.group.name": consumer}
    with tracer.start_as_current_span(
        f"process {destination_template(subject)}",
        context=_parent_context(remote),
        kind=SpanKind.CONSUMER,
        attributes=attributes,
    ) as span:
        yield _ours(span, remote, remote.tracestate if remote is not None else None)


@contextmanager
def producer_span(
    tracer: Tracer, parent: SpanContext | None, *, subject: str, issuance: str | None
) -> Iterator[SpanContext]:
    """A PRODUCER span for publishing one event (see the module doc for its trace id)."""
    wanted = int(tracing.trace_id_for(issuance), 16) if parent is None and issuance else None
    token = _wanted_trace_id.set(wanted)
    try:
        span = tracer.start_span(
            f"send {destination_template(subject)}",
            context=_parent_context(parent),
            kind=SpanKind.PRODUCER,
            attributes=_attributes(subject, "send"),
        )
    finally:
        _wanted_trace_id.reset(token)
    with trace.use_span(span, end_on_exit=True):
        yield _ours(span, parent, parent.tracestate if parent is not None else None)
