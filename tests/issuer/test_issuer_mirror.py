"""The status mirror's decision as a table, and the issuer's settings."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from pydantic import ValidationError

from services.issuer.mirror import cleared_status, mirrored_status
from services.issuer.settings import IssuerSettings
from shared.api.v1alpha2 import IssuedCertificateStatus, State
from shared.events import CertificateState, StatusChangedData

EXPIRES = dt.datetime(2027, 1, 1, tzinfo=dt.UTC)
LATER = dt.datetime(2028, 1, 1, tzinfo=dt.UTC)


def status(**fields: Any) -> IssuedCertificateStatus:
    return IssuedCertificateStatus(**fields)


def change(state: CertificateState, **fields: Any) -> StatusChangedData:
    base: dict[str, Any] = {
        "name": "istio-ca",
        "namespace": "istio-system",
        "state": state,
        "observed_generation": 7,
        "declaration_generation": 2,
    }
    base.update(fields)
    return StatusChangedData(**base)


FINISHED_A = status(
    state=State.FINISHED,
    observed_generation=2,
    issuance_id="issuance-a",
    not_after=EXPIRES,
    serial_number="aa",
)

CASES: dict[str, tuple[IssuedCertificateStatus, StatusChangedData, str, dict[str, Any]]] = {
    "mirror a first report": (
        status(),
        change(CertificateState.REQUESTED),
        "issuance-a",
        {"state": State.REQUESTED, "observed_generation": 2, "issuance_id": "issuance-a"},
    ),
    "mirror a finished issuance with its expiry": (
        status(state=State.ISSUED, observed_generation=2, issuance_id="issuance-a"),
        change(CertificateState.FINISHED, not_after=EXPIRES, serial_number="aa"),
        "issuance-a",
        {"state": State.FINISHED, "not_after": EXPIRES, "serial_number": "aa"},
    ),
    "ignore an earlier step of the same issuance arriving late": (
        FINISHED_A,
        change(CertificateState.REQUESTED),
        "issuance-a",
        {"state": State.FINISHED},
    ),
    "ignore a report about an older declaration generation": (
        status(state=State.FINISHED, observed_generation=3, issuance_id="issuance-b"),
        change(CertificateState.FAILED, error="old news"),
        "issuance-a",
        {"state": State.FINISHED, "error": "", "observed_generation": 3},
    ),
    "keep the held certificate's expiry while a new issuance is requested": (
        FINISHED_A,
        change(CertificateState.REQUESTED),
        "issuance-b",
        {"state": State.REQUESTED, "not_after": EXPIRES, "issuance_id": "issuance-b"},
    ),
    "a new issuance's expiry replaces the old one": (
        FINISHED_A,
        change(CertificateState.FINISHED, not_after=LATER, serial_number="bb"),
        "issuance-b",
        {"not_after": LATER, "serial_number": "bb"},
    ),
    "mirror an agent's failure with its error": (
        FINISHED_A,
        change(CertificateState.FAILED, error="bundle invalid: ChainBroken"),
        "issuance-a",
        {"state": State.FAILED, "error": "bundle invalid: ChainBroken"},
    ),
    "an error clears once the agent reports success": (
        status(state=State.FAILED, error="denied", observed_generation=2, issuance_id="x"),
        change(CertificateState.FINISHED, not_after=EXPIRES),
        "issuance-c",
        {"state": State.FINISHED, "error": ""},
    ),
    "leave the issuer's own failure until the issuer clears it": (
        status(state=State.FAILED, error="issuer: signingCertificateSecret a/b does not exist"),
        change(CertificateState.FINISHED),
        "issuance-a",
        {"state": State.FAILED},
    ),
}


@pytest.mark.parametrize(("current", "report", "issuance", "expected"), CASES.values(), ids=CASES)
def test_mirror(
    current: IssuedCertificateStatus,
    report: StatusChangedData,
    issuance: str,
    expected: dict[str, Any],
) -> None:
    after = mirrored_status(current, report, issuance=issuance)
    for field, value in expected.items():
        assert getattr(after, field) == value, field


ISSUER_FAILED = {"state": State.FAILED, "error": "issuer: signingCertificateSecret a/b is gone"}
CLEARED: dict[str, tuple[IssuedCertificateStatus, State, str]] = {
    "a cluster still holding a valid certificate reads FINISHED again": (
        status(**ISSUER_FAILED, serial_number="aa", not_after=EXPIRES),
        State.FINISHED,
        "",
    ),
    "a cluster whose certificate expired meanwhile reads PENDING": (
        status(
            **ISSUER_FAILED, serial_number="aa", not_after=dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
        ),
        State.PENDING,
        "",
    ),
    "a cluster that never held one reads PENDING": (status(**ISSUER_FAILED), State.PENDING, ""),
    "an agent's own failure is not the issuer's to clear": (
        status(state=State.FAILED, error="bundle invalid"),
        State.FAILED,
        "bundle invalid",
    ),
}


@pytest.mark.parametrize(("current", "state", "error"), CLEARED.values(), ids=CLEARED)
def test_clearing_the_issuers_failure(
    current: IssuedCertificateStatus, state: State, error: str
) -> None:
    now = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)
    after = cleared_status(current, now=now)
    assert (after.state, after.error) == (state, error)


def test_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MESHTRUST_ISSUER_INSTANCE", "issuer-7")
    monkeypatch.setenv("MESHTRUST_ISSUER_MAX_TTL", "24h")
    monkeypatch.setenv("MESHTRUST_ISSUER_BACKDATE", "90")
    monkeypatch.setenv("MESHTRUST_ISSUER_ECDSA_CURVES", "secp384r1")
    monkeypatch.setenv("MESHTRUST_ISSUER_EXCLUDED_NAMESPACES", "default, meshtrust-system")
    monkeypatch.setenv("MESHTRUST_NATS_URLS", "nats://a:4222,nats://b:4222")
    monkeypatch.setenv("MESHTRUST_KUBE_KUBECONFIG", "/etc/meshtrust/mgmt.kubeconfig")
    monkeypatch.setenv("MESHTRUST_HEALTH_PORT", "9090")
    settings = IssuerSettings()
    assert settings.source == "issuer/issuer-7"
    assert settings.max_ttl == dt.timedelta(days=1)
    assert settings.backdate == dt.timedelta(seconds=90)
    assert settings.key_policy().ecdsa_curves == frozenset({"secp384r1"})
    assert settings.excluded_namespaces == ("default", "meshtrust-system")
    assert settings.nats.urls == ("nats://a:4222", "nats://b:4222")
    assert str(settings.kube.kubeconfig) == "/etc/meshtrust/mgmt.kubeconfig"
    assert settings.health.port == 9090


@pytest.mark.parametrize(
    "env",
    [
        {"MESHTRUST_ISSUER_ECDSA_CURVES": "secp192r1"},
        {"MESHTRUST_ISSUER_RSA_MIN_BITS": "1024"},
        {"MESHTRUST_ISSUER_MAX_TTL": "0"},
        {"MESHTRUST_ISSUER_INSTANCE": "Not A Name"},
    ],
    ids=["an unknown curve", "RSA below 2048", "no lifetime", "an instance that is no name"],
)
def test_impossible_settings_are_refused_at_start(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str]
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError):
        IssuerSettings()
