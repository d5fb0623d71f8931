"""Trace context across a real nats-server: the `traceparent` on the wire, the span current
while a handler runs, the log lines of the handling, a malformed header, and OpenTelemetry
spans (the SDK's in-memory exporter, configured in-process)."""

from __future__ import annotations

from collections.abc import Iterator

import nats
import pytest
import structlog
from integration.bus_harness import Recorder, all_events_consumer, consumer_info, running
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from structlog.testing import capture_logs

from devstack.natsserver import NatsServer
from shared.bus import Bus, Delivery
from shared.bus.reading import read_stream
from shared.events import Envelope, Event, encode
from shared.events import subject as subject_of
from shared.runtime import otel, spans, tracing
from shared.runtime.tracing import SpanContext, parse_traceparent
from support.events import sample_events
from support.waiting import eventually


@pytest.fixture(autouse=True)
def _otel_off() -> Iterator[None]:
    spans.use_tracer_provider(None)
    yield
    spans.use_tracer_provider(None)


def subject(event: Envelope) -> str:
    return subject_of(event.cluster, event.event_type)


async def wire(bus: Bus, event: Envelope) -> SpanContext:
    """The span named by the `traceparent` `event` was stored with."""
    stored = [
        m async for m in read_stream(bus.connection, bus.settings.stream, subject=subject(event))
    ]
    assert len(stored) == 1
    headers = stored[0].headers or {}
    return parse_traceparent(headers["traceparent"], headers.get("tracestate"))


class Relay:
    """Handles `first` by publishing `second` (as the issuer answers a CSR), and notes the span
    current while each event is handled."""

    def __init__(self, bus: Bus, first: Envelope, second: Envelope) -> None:
        self.bus, self.first, self.second = bus, first, second
        self.current: dict[str, SpanContext | None] = {}
        self.recorder = Recorder(behaviour=self.behaviour)

    async def behaviour(self, event: Event, delivery: Delivery) -> None:
        self.current[event.type.value] = tracing.current()
        structlog.get_logger("test").info("handling", event_type=event.type.value)
        if event.id == self.first.id:
            await self.bus.publish(self.second)


async def relay_once(bus: Bus, first: Envelope, second: Envelope) -> Relay:
    relay = Relay(bus, first, second)
    async with running(bus.consumer(all_events_consumer(), relay.recorder)):
        await bus.publish(first)
        await eventually(lambda: len(relay.current) == 2, message="both events handled")
    return relay


async def test_an_event_published_in_a_handler_continues_the_handled_events_trace(
    bus: Bus,
) -> None:
    csr, issued = sample_events("east")[:2]
    with capture_logs(processors=[structlog.contextvars.merge_contextvars]) as logs:
        relay = await relay_once(bus, csr, issued)
    sent, answer = await wire(bus, csr), await wire(bus, issued)
    # Published outside any handling: the issuance's own trace.
    assert sent.trace_id == tracing.trace_id_for(csr.issuance)
    handled = relay.current["csr.requested"]
    assert handled is not None
    assert handled.trace_id == sent.trace_id
    assert handled.parent_id == sent.span_id
    # What the handler published: the same trace, a span of its own whose parent is the
    # handling's span (the publish's log line is written in that span and names the child).
    assert answer.trace_id == sent.trace_id
    assert answer.span_id not in {sent.span_id, handled.span_id}
    (published,) = [
        e for e in logs if e["event"] == "published" and e["traceparent"] == answer.traceparent
    ]
    assert published["span_id"] == handled.span_id
    assert published["parent_span_id"] == sent.span_id
    second = relay.current["certificate.issued"]
    assert second is not None
    assert (second.trace_id, second.parent_id) == (sent.trace_id, answer.span_id)
    # Every line of a handling carries its trace and span, the consumer's own lines included.
    handling = [e for e in logs if e["event"] == "handling"]
    assert {(e["event_type"], e["trace_id"], e["span_id"]) for e in handling} == {
        ("csr.requested", sent.trace_id, handled.span_id),
        ("certificate.issued", sent.trace_id, second.span_id),
    }
    acked = [e for e in logs if e["event"] == "acked"]
    assert len(acked) == 2
    assert all(e["trace_id"] == sent.trace_id for e in acked)


async def test_tracestate_is_passed_on_to_the_next_hop(bus: Bus, nats_server: NatsServer) -> None:
    csr, issued = sample_events("east")[:2]
    incoming = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    relay = Relay(bus, csr, issued)
    raw = await nats.connect(nats_server.url)
    try:
        async with running(bus.consumer(all_events_consumer(), relay.recorder)):
            await raw.jetstream().publish(
                subject(csr), encode(csr), headers={"traceparent": incoming, "tracestate": "v=1"}
            )
            await eventually(lambda: len(relay.current) == 2, message="both events handled")
    finally:
        await raw.close()
    answer = await wire(bus, issued)
    assert answer.trace_id == "0af7651916cd43dd8448eb211c80319c"
    assert answer.tracestate == "v=1"
    handled = relay.current["csr.requested"]
    assert handled is not None
    assert handled.parent_id == "b7ad6b7169203331"


@pytest.mark.parametrize(
    "traceparent",
    [
        "00-00000000000000000000000000000000-b7ad6b7169203331-01",
        "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01",
        "garbage",
    ],
)
async def test_a_malformed_incoming_traceparent_never_fails_the_message(
    bus: Bus, nats_server: NatsServer, traceparent: str
) -> None:
    csr, issued = sample_events("east")[:2]
    relay = Relay(bus, csr, issued)
    raw = await nats.connect(nats_server.url)
    try:
        with capture_logs() as logs:
            async with running(bus.consumer(all_events_consumer(), relay.recorder)):
                await raw.jetstream().publish(
                    subject(csr), encode(csr), headers={"traceparent": traceparent}
                )
                await eventually(lambda: len(relay.current) == 2, message="both events handled")
    finally:
        await raw.close()
    handled = relay.current["csr.requested"]
    assert handled is not None
    assert handled.parent_id is None, "a new trace was started"
    assert (await wire(bus, issued)).trace_id == handled.trace_id
    assert [e["log_level"] for e in logs if e["event"].startswith("ignoring a malformed")] == [
        "debug"
    ]
    assert [d.num_delivered for d in relay.recorder.deliveries] == [1, 1]
    info = await consumer_info(bus, "test")
    assert info.num_ack_pending == 0  # type: ignore[attr-defined]


async def test_with_an_exporter_each_publish_and_handling_is_a_span_parented_by_the_wire(
    bus: Bus,
) -> None:
    exporter = InMemorySpanExporter()
    spans.use_tracer_provider(otel.make_provider(SimpleSpanProcessor(exporter)))
    csr, issued = sample_events("east")[:2]
    relay = await relay_once(bus, csr, issued)
    sent, answer = await wire(bus, csr), await wire(bus, issued)
    finished = exporter.get_finished_spans()
    by_kind = {
        (s.kind, (s.attributes or {}).get("messaging.destination.name")): s for s in finished
    }
    assert len(finished) == 4
    send_csr = by_kind[SpanKind.PRODUCER, subject(csr)]
    process_csr = by_kind[SpanKind.CONSUMER, subject(csr)]
    send_issued = by_kind[SpanKind.PRODUCER, subject(issued)]
    process_issued = by_kind[SpanKind.CONSUMER, subject(issued)]

    def ids(span: object) -> tuple[str, str]:
        ctx = span.get_span_context()  # type: ignore[attr-defined]
        return f"{ctx.trace_id:032x}", f"{ctx.span_id:016x}"

    def parent(span: object) -> str | None:
        p = span.parent  # type: ignore[attr-defined]
        return f"{p.span_id:016x}" if p is not None else None

    # The ids on the wire are the spans' own, and each span's parent is the one before it.
    assert ids(send_csr) == (tracing.trace_id_for(csr.issuance), sent.span_id)
    assert parent(send_csr) is None
    assert parent(process_csr) == sent.span_id
    assert ids(send_issued) == (sent.trace_id, answer.span_id)
    assert parent(send_issued) == ids(process_csr)[1]
    assert parent(process_issued) == answer.span_id
    assert {ids(s)[0] for s in finished} == {sent.trace_id}
    handled = relay.current["csr.requested"]
    assert handled is not None
    assert handled.span_id == ids(process_csr)[1]
    attributes = dict(process_csr.attributes or {})
    assert attributes["messaging.system"] == "nats"
    assert attributes["messaging.operation.type"] == "process"
    assert attributes["messaging.consumer.group.name"] == "test"
    assert process_csr.name == "process meshtrust.v1.{cluster}.csr.requested"
    assert send_issued.name == "send meshtrust.v1.{cluster}.certificate.issued"
