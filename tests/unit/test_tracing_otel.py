"""OpenTelemetry's configuration from the standard variables, and the spans' ids and parents,
with the SDK's in-memory exporter (no bus: tests/integration/test_trace_context.py has it)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from structlog.testing import capture_logs

from shared.runtime import otel, spans, tracing

EXAMPLE = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


@pytest.fixture(autouse=True)
def _fresh(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in ("OTEL_TRACES_EXPORTER", "OTEL_EXPORTER_OTLP_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(spans, "_tracer", spans._UNSET)
    yield
    spans.use_tracer_provider(None)


def test_the_console_exporter_is_made_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "console")
    assert isinstance(otel.provider_from_env(), TracerProvider)


def test_an_unknown_exporter_is_warned_about_and_leaves_spans_off(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "zipkin-of-my-dreams")
    with capture_logs() as logs:
        assert otel.provider_from_env() is None
        with spans.producing("s", issuance="ab" * 16) as span:
            pass
    assert span.trace_id == tracing.trace_id_for("ab" * 16)
    assert any(e["event"] == "unknown OTEL_TRACES_EXPORTER entry ignored" for e in logs)


def test_otlp_without_its_exporter_installed_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")
    monkeypatch.setattr(otel, "_OTLP", ("meshtrust_no_such_exporter",))
    with capture_logs() as logs:
        assert otel.provider_from_env() is None
    assert any("no OTLP exporter is installed" in e["event"] for e in logs)


def test_spans_follow_the_wire_and_a_root_gets_the_issuances_trace_id() -> None:
    exporter = InMemorySpanExporter()
    spans.use_tracer_provider(otel.make_provider(SimpleSpanProcessor(exporter)))
    with spans.producing("meshtrust.v1.east.csr.requested", issuance="cd" * 16) as root:
        pass
    with (
        spans.handling(
            {"traceparent": EXAMPLE, "tracestate": "k=v"},
            subject="meshtrust.v1.east.x",
            consumer="d",
        ) as handled,
        spans.producing("meshtrust.v1.east.y", issuance="cd" * 16) as child,
    ):
        pass
    send_root, send_child, process = exporter.get_finished_spans()
    assert root.trace_id == tracing.trace_id_for("cd" * 16)
    assert send_root.parent is None
    assert send_root.kind is SpanKind.PRODUCER
    assert f"{send_root.context.span_id:016x}" == root.span_id
    assert process.kind is SpanKind.CONSUMER
    assert process.parent is not None
    assert f"{process.parent.span_id:016x}" == "00f067aa0ba902b7"
    assert f"{process.context.trace_id:032x}" == handled.trace_id == EXAMPLE[3:35]
    assert f"{process.context.span_id:016x}" == handled.span_id
    assert send_child.parent is not None
    assert f"{send_child.parent.span_id:016x}" == handled.span_id
    assert child.trace_id == handled.trace_id
    assert child.parent_id == handled.span_id
    assert child.tracestate == "k=v"
    assert (process.attributes or {})["messaging.destination.name"] == "meshtrust.v1.east.x"


def test_the_span_name_keeps_the_cluster_out() -> None:
    assert otel.destination_template("meshtrust.v1.east.csr.requested") == (
        "meshtrust.v1.{cluster}.csr.requested"
    )
    assert otel.destination_template("other.subject") == "other.subject"
