"""The agent's smaller decisions as tables: spec validation, retry delays, renewal time, a
spent key."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from agent.agent_policy_cases import (
    NOW,
    SPEC,
    TIMING,
    key,
    observed,
    requested,
    status,
)

from services.agent import policies
from services.agent.policies import (
    Observed,
)
from shared.api.v1alpha2 import State

VALID = SPEC.to_wire()


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        pytest.param(
            {**VALID, "issuedCertificateSecret": None},
            "spec.issuedCertificateSecret",
            id="no issuedCertificateSecret names the field",
        ),
        pytest.param(
            {k: v for k, v in VALID.items() if k != "issuedCertificateSecret"},
            "spec.issuedCertificateSecret",
            id="a missing issuedCertificateSecret names the field",
        ),
        pytest.param({**VALID, "hosts": []}, "spec.hosts", id="empty hosts name the field"),
        pytest.param(
            {**VALID, "hosts": ["a b"]}, "spec.hosts[0]", id="a malformed host is named by index"
        ),
        pytest.param(
            {**VALID, "hosts": ["ok.example", ""]},
            "spec.hosts[1]",
            id="an empty host is named by index",
        ),
        pytest.param(
            {**VALID, "certOptions": {"keyAlgorithm": "RSA", "keySize": 256}},
            "spec.certOptions",
            id="an unsupported key size names certOptions",
        ),
        pytest.param(
            {**VALID, "certOptions": {"ttl": "soon"}},
            "spec.certOptions.ttl",
            id="a malformed ttl names the field",
        ),
        pytest.param({**VALID, "org": "o" * 65}, "spec.org", id="an over-long org names the field"),
    ],
)
def test_invalid_specs_are_refused_naming_the_field(raw: dict[str, Any], field: str) -> None:
    spec, error = policies.validate_spec(raw, name="istio-ca")
    assert spec is None
    assert error is not None
    assert error.startswith(field), error


def test_a_valid_spec_is_accepted() -> None:
    spec, error = policies.validate_spec(VALID, name="istio-ca")
    assert error is None
    assert spec == SPEC


@pytest.mark.parametrize(
    ("failures", "rand", "expected"),
    [
        pytest.param(1, 0.5, 10.0, id="the first failure waits the initial delay"),
        pytest.param(2, 0.5, 20.0, id="the delay doubles per failure"),
        pytest.param(4, 0.5, 80.0, id="and doubles again"),
        pytest.param(20, 0.5, 600.0, id="it is capped"),
        pytest.param(20, 0.99, 600.0, id="jitter never goes over the cap"),
        pytest.param(1, 0.0, 8.0, id="jitter may shorten it by 20 percent"),
        pytest.param(1, 1.0, 12.0, id="or lengthen it by 20 percent"),
    ],
)
def test_retry_delay(failures: int, rand: float, expected: float) -> None:
    assert policies.retry_delay(failures, timing=TIMING, rand=rand) == pytest.approx(expected)


H = dt.timedelta(hours=1)


@pytest.mark.parametrize(
    ("not_before", "not_after", "declared", "ratio", "rand", "expected"),
    [
        pytest.param(
            NOW,
            NOW + 3 * H,
            3 * H,
            1 / 3,
            0.0,
            NOW + 2 * H,
            id="renewal starts with a third of the lifetime left",
        ),
        pytest.param(NOW, NOW + 4 * H, 4 * H, 0.5, 0.0, NOW + 2 * H, id="or at the ratio given"),
        pytest.param(
            NOW,
            NOW + 4 * H,
            4 * H,
            0.5,
            1.0,
            NOW + 2 * H - 0.05 * 2 * H,
            id="jitter starts it up to 5 percent of the window earlier",
        ),
        pytest.param(
            NOW - dt.timedelta(minutes=5),
            NOW + dt.timedelta(seconds=60),
            dt.timedelta(seconds=60),
            0.5,
            0.0,
            NOW + dt.timedelta(seconds=30),
            id="the issuer's backdating does not count as lifetime",
        ),
        pytest.param(
            NOW,
            NOW + H,
            10 * H,
            0.5,
            0.0,
            NOW + 0.5 * H,
            id="a certificate clamped by its signer renews by its own lifetime",
        ),
    ],
)
def test_renewal_time(
    not_before: dt.datetime,
    not_after: dt.datetime,
    declared: dt.timedelta,
    ratio: float,
    rand: float,
    expected: dt.datetime,
) -> None:
    at = policies.renewal_time(
        not_before=not_before,
        not_after=not_after,
        declared=declared,
        ratio=ratio,
        jitter=0.05,
        rand=rand,
    )
    assert at == expected.replace(microsecond=0)


@pytest.mark.parametrize(
    ("o", "spent"),
    [
        (observed(status(State.ISSUED), key=key()), True),
        (observed(status(State.FINISHED), key=key()), True),
        (observed(status(State.FINISHED), key=None), False),
        (observed(status(State.FINISHED), key=key("i-next")), False),
        (requested(), False),
        (observed(status(State.FAILED), key=key()), False),
    ],
    ids=[
        "ISSUED with its own key Secret: spent",
        "FINISHED with its own key Secret: spent",
        "no key Secret",
        "a key Secret of a newer issuance (an interrupted start) is kept for adoption",
        "REQUESTED: the key is still waiting for its certificate",
        "FAILED: the failure path deletes it itself, before the status",
    ],
)
def test_spent_key(o: Observed, spent: bool) -> None:
    assert policies.spent_key(o) is spent
