"""W3C Trace Context, pure: parsing (strict, as the specification asks), formatting, children,
the issuance's trace id, and the spans the bus uses without OpenTelemetry."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys

import pytest
import structlog
from structlog.testing import capture_logs

from shared.runtime import spans, tracing
from shared.runtime.tracing import InvalidTraceparent, SpanContext, parse_traceparent

# The specification's own example.
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN_ID = "00f067aa0ba902b7"
EXAMPLE = f"00-{TRACE_ID}-{SPAN_ID}-01"
HEX16 = re.compile(r"^[0-9a-f]{16}$")


@pytest.fixture(autouse=True)
def _no_otel() -> None:
    spans.use_tracer_provider(None)


def test_the_specifications_example_parses_and_formats_back() -> None:
    span = parse_traceparent(EXAMPLE, "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE")
    assert span == SpanContext(
        TRACE_ID, SPAN_ID, 1, tracestate="rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"
    )
    assert span.sampled
    assert span.traceparent == EXAMPLE
    assert span.headers() == {
        "traceparent": EXAMPLE,
        "tracestate": "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE",
    }


def test_an_unsampled_trace_keeps_its_flag() -> None:
    span = parse_traceparent(f"00-{TRACE_ID}-{SPAN_ID}-00")
    assert not span.sampled
    assert span.child().traceparent.endswith("-00")
    assert span.headers() == {"traceparent": f"00-{TRACE_ID}-{SPAN_ID}-00"}


@pytest.mark.parametrize(
    ("value", "why"),
    [
        (f"00-{'0' * 32}-{SPAN_ID}-01", "trace id is all zeros"),
        (f"00-{TRACE_ID}-{'0' * 16}-01", "parent id is all zeros"),
        (f"ff-{TRACE_ID}-{SPAN_ID}-01", "version ff"),
        (f"0g-{TRACE_ID}-{SPAN_ID}-01", "lower-case hex"),
        (f"00-{TRACE_ID.upper()}-{SPAN_ID}-01", "lower-case hex"),
        (f"00-{TRACE_ID[:-1]}-{SPAN_ID}-01", "lower-case hex"),
        (f"00-{TRACE_ID}-{SPAN_ID}0-01", "lower-case hex"),
        (f"00-{TRACE_ID}-{SPAN_ID}-1", "lower-case hex"),
        (f"00-{TRACE_ID}-{SPAN_ID}-01-extra", "version 00 is 55 characters"),
        (f"00-{TRACE_ID}-{SPAN_ID}-01 ", "version 00 is 55 characters"),
        (f"01-{TRACE_ID}-{SPAN_ID}-01x", "must follow a '-'"),
        (f"00_{TRACE_ID}_{SPAN_ID}_01", "lower-case hex"),
        ("", "lower-case hex"),
    ],
)
def test_malformed_traceparents_are_refused_saying_why(value: str, why: str) -> None:
    with pytest.raises(InvalidTraceparent, match=re.escape(why)):
        parse_traceparent(value)


def test_a_later_version_is_read_by_its_first_four_fields() -> None:
    span = parse_traceparent(f"cc-{TRACE_ID}-{SPAN_ID}-09-what-the-future-holds")
    assert (span.trace_id, span.span_id, span.flags) == (TRACE_ID, SPAN_ID, 1)
    assert span.child().traceparent.startswith(f"00-{TRACE_ID}-")
    assert parse_traceparent(f"01-{TRACE_ID}-{SPAN_ID}-00").flags == 0


@pytest.mark.parametrize("state", ["x" * 513, "a=b\nc=d", "", "   ", "é=1"])
def test_a_tracestate_that_cannot_be_passed_on_is_dropped_not_cut(state: str) -> None:
    span = parse_traceparent(EXAMPLE, state)
    assert span.tracestate is None
    assert span.headers() == {"traceparent": EXAMPLE}


def test_a_child_shares_the_trace_and_has_a_new_span_whose_parent_is_this_one() -> None:
    parent = parse_traceparent(EXAMPLE, "rojo=1")
    child = parent.child()
    assert child.trace_id == TRACE_ID
    assert HEX16.match(child.span_id)
    assert child.span_id != SPAN_ID
    assert child.parent_id == SPAN_ID
    assert child.tracestate == "rojo=1"
    assert child.flags == parent.flags
    assert child.log_fields() == {
        "trace_id": TRACE_ID,
        "span_id": child.span_id,
        "parent_span_id": SPAN_ID,
    }
    assert len({parent.child().span_id for _ in range(100)}) == 100


def test_headers_without_a_traceparent_have_no_span_and_malformed_ones_raise() -> None:
    assert tracing.from_headers(None) is None
    assert tracing.from_headers({"Nats-Msg-Id": "x"}) is None
    assert tracing.from_headers({"traceparent": EXAMPLE}) == parse_traceparent(EXAMPLE)
    with pytest.raises(InvalidTraceparent):
        tracing.from_headers({"traceparent": "00-nope"})


def test_an_issuance_has_one_trace_id_every_time_and_unlike_any_others() -> None:
    first = tracing.start_trace("3f2a" * 8)
    again = tracing.start_trace("3f2a" * 8)
    other = tracing.start_trace("3f2b" * 8)
    assert first.trace_id == again.trace_id == tracing.trace_id_for("3f2a" * 8)
    assert first.span_id != again.span_id
    assert other.trace_id != first.trace_id
    assert first.parent_id is None
    assert parse_traceparent(first.traceparent) == SpanContext(first.trace_id, first.span_id)


def test_without_an_issuance_a_trace_is_random() -> None:
    ids = {tracing.start_trace().trace_id for _ in range(50)}
    assert len(ids) == 50
    assert all(re.fullmatch(r"[0-9a-f]{32}", i) and i != "0" * 32 for i in ids)


def test_handling_makes_the_incoming_trace_current_and_logs_carry_it() -> None:
    with capture_logs(processors=[structlog.contextvars.merge_contextvars]) as logs:
        with spans.handling({"traceparent": EXAMPLE}, subject="s", consumer="c") as span:
            assert tracing.current() == span
            structlog.get_logger().info("inside")
            with spans.producing("s", issuance="ab" * 16) as sent:
                pass
        structlog.get_logger().info("after")
    assert span.trace_id == TRACE_ID
    assert span.parent_id == SPAN_ID
    assert sent.trace_id == TRACE_ID
    assert sent.parent_id == span.span_id
    assert len({SPAN_ID, span.span_id, sent.span_id}) == 3
    inside, after = logs
    assert (inside["trace_id"], inside["span_id"], inside["parent_span_id"]) == (
        TRACE_ID,
        span.span_id,
        SPAN_ID,
    )
    assert "trace_id" not in after
    assert tracing.current() is None


def test_a_malformed_incoming_traceparent_starts_a_new_trace_logged_at_debug() -> None:
    with (
        capture_logs() as logs,
        spans.handling(
            {"traceparent": f"00-{'0' * 32}-{SPAN_ID}-01"}, subject="s", consumer="c"
        ) as span,
    ):
        pass
    assert span.parent_id is None
    assert span.trace_id != "0" * 32
    (entry,) = logs
    assert entry["log_level"] == "debug"
    assert "all zeros" in entry["error"]


def test_publishing_outside_any_handling_starts_the_issuances_trace() -> None:
    with (
        spans.producing("s", issuance="cd" * 16) as first,
        spans.producing("s", issuance="cd" * 16) as again,
    ):
        pass
    assert first.trace_id == again.trace_id == tracing.trace_id_for("cd" * 16)
    assert first.parent_id is None
    assert first.span_id != again.span_id


async def test_each_task_has_its_own_current_span() -> None:
    seen: dict[str, str | None] = {}
    entered: list[str] = []
    both_in = asyncio.Event()

    async def handle(name: str, traceparent: str) -> None:
        with spans.handling({"traceparent": traceparent}, subject="s", consumer="c"):
            entered.append(name)
            if len(entered) == 2:
                both_in.set()
            await both_in.wait()  # both spans are current at once, each in its own task
            current = tracing.current()
            seen[name] = current.trace_id if current else None

    other = f"00-{'1' * 32}-{SPAN_ID}-01"
    await asyncio.gather(handle("a", EXAMPLE), handle("b", other))
    assert seen == {"a": TRACE_ID, "b": "1" * 32}


def test_otel_is_configured_only_by_the_standard_variables() -> None:
    assert not spans.otel_configured({})
    assert not spans.otel_configured({"OTEL_TRACES_EXPORTER": "none"})
    assert not spans.otel_configured(
        {"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://x:4318"}
    )
    assert spans.otel_configured({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x:4318"})
    assert spans.otel_configured({"OTEL_TRACES_EXPORTER": "console"})


def test_opentelemetry_is_never_imported_when_not_configured() -> None:
    code = (
        "import sys\n"
        "import shared.bus\n"
        "from shared.runtime import spans\n"
        f"with spans.handling({{'traceparent': '{EXAMPLE}'}}, subject='s', consumer='c'):\n"
        "    with spans.producing('s', issuance=None):\n"
        "        pass\n"
        "print(sorted(m for m in sys.modules if m.startswith('opentelemetry')))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    )
    assert out.stdout.strip() == "[]"
