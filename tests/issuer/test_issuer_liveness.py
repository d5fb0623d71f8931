"""Liveness, the pure decision (`services.issuer.liveness`), table-tested: which declarations
are flagged silent, expired or overdue, what the error says, and when the flag clears."""

from __future__ import annotations

import datetime as dt

import pytest

from services.agent.settings import AgentSettings
from services.issuer.liveness import (
    LIVENESS_PREFIX,
    Seen,
    Thresholds,
    checked_status,
    liveness_flag,
)
from services.issuer.mirror import ISSUER_ERROR_PREFIX
from services.issuer.settings import IssuerSettings
from shared.api.v1alpha2 import IssuedCertificateStatus, State
from shared.events import CertificateState
from shared.events.reports import ReportedCertificate

NOW = dt.datetime(2026, 12, 7, 12, 0, tzinfo=dt.UTC)
T = Thresholds(
    silence=dt.timedelta(minutes=3),
    renewal_grace=dt.timedelta(minutes=10),
    resolution=dt.timedelta(minutes=1),
)


def ago(**delta: float) -> dt.datetime:
    return NOW - dt.timedelta(**delta)


def later(**delta: float) -> dt.datetime:
    return NOW + dt.timedelta(**delta)


def finished(**fields: object) -> IssuedCertificateStatus:
    return IssuedCertificateStatus(state=State.FINISHED, **fields)  # type: ignore[arg-type]


def reported(**fields: object) -> ReportedCertificate:
    options: dict[str, object] = {
        "name": "istio-cacerts",
        "namespace": "istio-system",
        "state": CertificateState.FINISHED,
    }
    options.update(fields)
    return ReportedCertificate.model_validate(options)


CASES = [
    # (id, seen, status, report, expected fragments ("" = no flag))
    (
        "alive and valid",
        Seen(cluster="east", heard=ago(seconds=30)),
        finished(),
        reported(not_after=later(days=300), renewal_time=later(days=200)),
        [],
    ),
    (
        "never heard from, valid: not silent",
        Seen(cluster="east"),
        finished(not_after=later(days=1)),
        None,
        [],
    ),
    (
        "silent, valid",
        Seen(cluster="east", heard=ago(minutes=5), reported=ago(minutes=5)),
        finished(),
        reported(not_after=later(days=300)),
        [
            "cluster east silent since 2026-12-07T11:55:00Z (last report 2026-12-07T11:55:00Z)",
            "check the agent in east",
        ],
    ),
    (
        "silent, heard from by an event only",
        Seen(cluster="east", heard=ago(minutes=4)),
        finished(),
        None,
        ["(last report never)"],
    ),
    (
        "just under the threshold",
        Seen(cluster="east", heard=ago(minutes=2, seconds=59)),
        finished(),
        None,
        [],
    ),
    (
        "silent and expired",
        Seen(cluster="east", heard=ago(hours=2), reported=ago(hours=2)),
        finished(),
        reported(not_after=ago(minutes=3)),
        [
            "silent since",
            "its certificate expired at 2026-12-07T11:57:00Z",
            ": check the agent in east",
        ],
    ),
    (
        "expired per the mirrored status when no report",
        Seen(cluster="east"),
        finished(not_after=ago(seconds=1)),
        None,
        ["its certificate expired at", "check the agent's errors in east"],
    ),
    (
        "the report's notAfter wins over the mirrored one",
        Seen(cluster="east", heard=NOW),
        finished(not_after=ago(days=1)),
        reported(not_after=later(days=1)),
        [],
    ),
    (
        "renewal overdue past the grace",
        Seen(cluster="east", heard=ago(seconds=10)),
        finished(),
        reported(not_after=later(days=9), renewal_time=ago(minutes=11)),
        [
            "was due for renewal at 2026-12-07T11:49:00Z, expires 2026-12-16T12:00:00Z",
            "check the agent's errors in east",
        ],
    ),
    (
        "renewal due within the grace",
        Seen(cluster="east", heard=ago(seconds=10)),
        finished(),
        reported(not_after=later(days=9), renewal_time=ago(minutes=9)),
        [],
    ),
]


@pytest.mark.parametrize(
    ("seen", "status", "report", "fragments"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_flag(
    seen: Seen,
    status: IssuedCertificateStatus,
    report: ReportedCertificate | None,
    fragments: list[str],
) -> None:
    flag = liveness_flag(seen, status, report, now=NOW, thresholds=T)
    if not fragments:
        assert flag == ""
        return
    assert flag.startswith(LIVENESS_PREFIX)
    for fragment in fragments:
        assert fragment in flag


def test_flag_keeps_the_mirrored_state_and_records_last_seen() -> None:
    new = checked_status(
        finished(), flag=f"{LIVENESS_PREFIX}x", heard=ago(minutes=5), reported=None, thresholds=T
    )
    assert new.state is State.FINISHED
    assert new.error == f"{LIVENESS_PREFIX}x"
    assert new.last_seen_time == ago(minutes=5)


def test_clearing_restores_the_agents_own_error() -> None:
    current = finished(error=f"{LIVENESS_PREFIX}x", last_seen_time=ago(minutes=5))
    new = checked_status(
        current, flag="", heard=NOW, reported=reported(error="bounce failed"), thresholds=T
    )
    assert new.error == "bounce failed"
    assert new.last_seen_time == NOW


def test_an_agents_error_is_not_cleared_by_a_check() -> None:
    current = finished(error="the agent's own", last_seen_time=NOW)
    assert checked_status(current, flag="", heard=NOW, reported=None, thresholds=T) is current


def test_last_seen_moves_only_by_the_resolution() -> None:
    current = finished(last_seen_time=ago(seconds=30))
    assert checked_status(current, flag="", heard=NOW, reported=None, thresholds=T) is current
    moved = checked_status(current, flag="", heard=later(seconds=31), reported=None, thresholds=T)
    assert moved.last_seen_time == later(seconds=31)


def test_an_issuer_failure_stands() -> None:
    current = IssuedCertificateStatus(state=State.FAILED, error=f"{ISSUER_ERROR_PREFIX}no CA")
    new = checked_status(
        current, flag=f"{LIVENESS_PREFIX}x", heard=NOW, reported=None, thresholds=T
    )
    assert new.error == current.error
    assert new.state is State.FAILED


def test_renewal_time_taken_from_the_report() -> None:
    new = checked_status(
        finished(last_seen_time=NOW),
        flag="",
        heard=NOW,
        reported=reported(renewal_time=later(days=3)),
        thresholds=T,
    )
    assert new.renewal_time == later(days=3)


def test_the_same_flag_again_writes_nothing() -> None:
    current = finished(error=f"{LIVENESS_PREFIX}x", last_seen_time=NOW)
    new = checked_status(
        current, flag=f"{LIVENESS_PREFIX}x", heard=NOW, reported=None, thresholds=T
    )
    assert new is current


def test_the_liveness_settings_read_durations_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MESHTRUST_ISSUER_SILENCE_THRESHOLD", "90s")
    monkeypatch.setenv("MESHTRUST_ISSUER_RENEWAL_GRACE", "1h")
    monkeypatch.setenv("MESHTRUST_ISSUER_LAST_SEEN_RESOLUTION", "30")
    monkeypatch.setenv("MESHTRUST_ISSUER_LIVENESS_INTERVAL", "5")
    settings = IssuerSettings()
    assert settings.silence_threshold == dt.timedelta(seconds=90)
    assert settings.renewal_grace == dt.timedelta(hours=1)
    assert settings.last_seen_resolution == dt.timedelta(seconds=30)
    assert settings.liveness_interval == 5.0


def test_the_agent_reports_every_minute_by_default_and_the_issuer_waits_three() -> None:
    interval = AgentSettings.model_fields["report_interval"].default
    assert IssuerSettings().silence_threshold == dt.timedelta(seconds=3 * interval)
