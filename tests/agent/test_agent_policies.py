"""The agent's state machine as a table: (observed state, now) -> decision, one sentence per row."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace

import pytest
from agent.agent_policy_cases import (
    BOUNCING,
    GOOD,
    INFO,
    LIMITED,
    NOW,
    REFUSED,
    TIMING,
    key,
    observed,
    requested,
    status,
)

from services.agent import policies
from services.agent.policies import (
    Bounce,
    Complete,
    Decision,
    Fail,
    Finish,
    Issue,
    IssuedView,
    Observed,
    Refuse,
    Send,
    Verdict,
    Wait,
    rate_limited_error,
    refusal_error,
)
from shared.api.v1alpha2 import IssuedCertificateStatus, State

CASES: list[tuple[str, Observed, Decision]] = [
    (
        "a new IssuedCertificate is issued",
        observed(IssuedCertificateStatus(), issued=None),
        Issue("Pending", "a new IssuedCertificate"),
    ),
    (
        "an invalid spec fails naming the field and is not retried",
        observed(IssuedCertificateStatus(), spec=None, spec_error="spec.hosts[0]: empty"),
        Fail("InvalidSpec", "spec.hosts[0]: empty", retry=False),
    ),
    (
        "an invalid spec already reported waits for a change",
        observed(
            status(State.FAILED, error="spec.hosts[0]: empty"),
            spec=None,
            spec_error="spec.hosts[0]: empty",
        ),
        Wait(),
    ),
    (
        "a finished certificate in place waits until its renewal time",
        observed(status(State.FINISHED)),
        Wait(TIMING.max_requeue),
    ),
    (
        "a finished certificate waits exactly until a near renewal time",
        observed(status(State.FINISHED, renewal_time=NOW + dt.timedelta(seconds=30))),
        Wait(30.0),
    ),
    (
        "trigger issuance when the generation changed",
        observed(status(State.FINISHED), generation=2),
        Issue("SpecChanged", "generation 2 differs from the observed generation 1"),
    ),
    (
        "trigger issuance when the issued Secret is missing",
        observed(status(State.FINISHED), issued=None),
        Issue("SecretMissing", "the issued Secret does not exist"),
    ),
    (
        "trigger issuance when the issued Secret fails the bundle check",
        observed(
            status(State.FINISHED),
            issued=IssuedView(issuance="i-current", info=None, problem="KeyMismatch: no"),
        ),
        Issue("SecretInvalid", "the issued Secret is not fit for use: KeyMismatch: no"),
    ),
    (
        "trigger issuance when the issued Secret holds another issuance",
        observed(
            status(State.FINISHED), issued=IssuedView(issuance="i-old", info=INFO, problem=None)
        ),
        Issue(
            "SecretMismatch", "the issued Secret does not hold the current issuance's certificate"
        ),
    ),
    (
        "trigger issuance when the issued Secret holds another serial",
        observed(status(State.FINISHED, serial_number="def")),
        Issue("SecretMismatch", "the issued Secret holds serial abc, not the issued def"),
    ),
    (
        "trigger issuance when the renewal time has come",
        observed(status(State.FINISHED, renewal_time=NOW)),
        Issue("RenewalDue", f"renewal time {NOW.isoformat()} has come"),
    ),
    (
        "trigger issuance when the issuer's signing CA changed",
        observed(
            status(State.FINISHED),
            signing_chain="b" * 64,
            issued=IssuedView(
                issuance="i-current", info=INFO, problem=None, signing_chain="a" * 64
            ),
        ),
        Issue(
            "SigningCAChanged", "the issuer's signing CA changed since the certificate was issued"
        ),
    ),
    (
        "a certificate issued under the current signing CA is kept",
        observed(
            status(State.FINISHED),
            signing_chain="a" * 64,
            issued=IssuedView(
                issuance="i-current", info=INFO, problem=None, signing_chain="a" * 64
            ),
        ),
        Wait(TIMING.max_requeue),
    ),
    (
        "an object without a desired signing CA is never re-issued for it",
        observed(
            status(State.FINISHED),
            issued=IssuedView(
                issuance="i-current", info=INFO, problem=None, signing_chain="a" * 64
            ),
        ),
        Wait(TIMING.max_requeue),
    ),
    (
        "a signing CA change while requested starts a new issuance",
        requested(signing_chain="b" * 64, key=key(signing_chain="a" * 64)),
        Issue("SigningCAChanged", "the issuer's signing CA changed meanwhile"),
    ),
    (
        "a requested issuance waits for the issuer until the re-send is due",
        requested(),
        Wait(50.0),
    ),
    (
        "a requested issuance whose answer is late is sent again as the next attempt",
        requested(key=key(requested_at=NOW - dt.timedelta(seconds=61))),
        Send(attempt=2, wait=60.0),
    ),
    (
        "after a restart the same attempt of the same CSR is sent again",
        requested(sent=False),
        Send(attempt=1, wait=50.0),
    ),
    (
        "a key Secret never sent (crash before the publish) is sent",
        requested(key=key(requested_at=None)),
        Send(attempt=1, wait=60.0),
    ),
    (
        "the issued bundle of the current issuance completes it",
        requested(issued=GOOD),
        Complete(INFO),
    ),
    (
        "a bundle of another issuance does not complete the current one",
        requested(issued=IssuedView(issuance="i-old", info=INFO, problem=None)),
        Wait(50.0),
    ),
    (
        "a denial of the current issuance fails with the issuer's reason",
        requested(
            verdict=Verdict(
                issuance="i-current",
                kind="denied",
                reason="HostsMismatch",
                message="HostsMismatch: extra host",
            )
        ),
        Fail("HostsMismatch", "the issuer denied the CSR: HostsMismatch: extra host"),
    ),
    (
        "a rate-limited CSR is reported, not failed, and the issuance stays requested",
        requested(verdict=LIMITED),
        Refuse("RateLimited", rate_limited_error(LIMITED)),
    ),
    (
        "a rate-limited CSR is not sent again before its retry time, even when a re-send is due",
        requested(
            verdict=LIMITED,
            status=status(State.REQUESTED, error=rate_limited_error(LIMITED)),
            key=key(requested_at=NOW - dt.timedelta(minutes=30)),
        ),
        Wait(600.0),
    ),
    (
        "a rate-limited CSR is sent again, as the next attempt, once its retry time has come",
        requested(
            verdict=replace(LIMITED, retry_after=NOW),
            status=status(
                State.REQUESTED, error=rate_limited_error(replace(LIMITED, retry_after=NOW))
            ),
        ),
        Send(attempt=2, wait=60),
    ),
    (
        "a rate-limited CSR sent again after its retry time waits for that answer",
        requested(
            verdict=replace(LIMITED, retry_after=NOW - dt.timedelta(seconds=30)),
            status=status(
                State.REQUESTED,
                error=rate_limited_error(
                    replace(LIMITED, retry_after=NOW - dt.timedelta(seconds=30))
                ),
            ),
            key=key(attempt=2, requested_at=NOW - dt.timedelta(seconds=10)),
        ),
        Wait(50.0),
    ),
    (
        "a rate limit without a retry time keeps the usual re-send timing",
        requested(
            verdict=replace(LIMITED, retry_after=None),
            status=status(
                State.REQUESTED, error=rate_limited_error(replace(LIMITED, retry_after=None))
            ),
            key=key(requested_at=NOW - dt.timedelta(seconds=61)),
        ),
        Send(attempt=2, wait=60),
    ),
    (
        "a refused certificate is reported and the issuance stays requested",
        requested(verdict=REFUSED),
        Refuse("UntrustedRoot", refusal_error(REFUSED)),
    ),
    (
        "a refusal already reported goes on waiting for the real answer",
        requested(verdict=REFUSED, status=status(State.REQUESTED, error=refusal_error(REFUSED))),
        Wait(50.0),
    ),
    (
        "a refusal already reported still re-sends the CSR when it is due",
        requested(
            verdict=REFUSED,
            status=status(State.REQUESTED, error=refusal_error(REFUSED)),
            key=key(requested_at=NOW - dt.timedelta(seconds=61)),
        ),
        Send(attempt=2, wait=60.0),
    ),
    (
        "the real answer after a refusal completes the issuance",
        requested(
            verdict=REFUSED,
            status=status(State.REQUESTED, error=refusal_error(REFUSED)),
            issued=GOOD,
        ),
        Complete(INFO),
    ),
    (
        "a lost key Secret starts a new issuance",
        requested(key=None),
        Issue("KeyLost", "the key Secret of the requested issuance is gone"),
    ),
    (
        "a spec change while requested starts a new issuance",
        requested(generation=2),
        Issue("SpecChanged", "the spec changed while the CSR was out"),
    ),
    (
        "a key Secret left by an interrupted start of this generation is adopted",
        observed(IssuedCertificateStatus(), issued=None, key=key("i-new", requested_at=None)),
        Issue("Pending", "a new IssuedCertificate", adopt=key("i-new", requested_at=None)),
    ),
    (
        "a key Secret of an older generation is never adopted",
        observed(status(State.FINISHED), generation=2, key=key("i-new", generation=1)),
        Issue("SpecChanged", "generation 2 differs from the observed generation 1"),
    ),
    (
        "the key Secret of the failed issuance is never adopted",
        observed(
            status(State.FAILED, renewal_time=NOW - dt.timedelta(seconds=1), failed_attempts=1),
            key=key("i-current"),
        ),
        Issue("Retry", "retrying after 1 failure(s)"),
    ),
    (
        "a failure waits for its retry time",
        observed(status(State.FAILED, renewal_time=NOW + dt.timedelta(seconds=20))),
        Wait(20.0),
    ),
    (
        "a failure is retried at once on a spec change",
        observed(status(State.FAILED, renewal_time=NOW + dt.timedelta(seconds=20)), generation=2),
        Issue("SpecChanged", "the spec changed after a failure"),
    ),
    (
        "an issued certificate with a directive asks for a bounce after a restart",
        observed(status(State.ISSUED), spec=BOUNCING, sent=False),
        Bounce(),
    ),
    (
        "an issued certificate waits for the bouncer",
        observed(status(State.ISSUED), spec=BOUNCING),
        Wait(),
    ),
    (
        "a completed bounce finishes",
        observed(
            status(State.ISSUED),
            spec=BOUNCING,
            verdict=Verdict(issuance="i-current", kind="bounced"),
        ),
        Finish(),
    ),
    (
        "a failed bounce fails with the bouncer's error",
        observed(
            status(State.ISSUED),
            spec=BOUNCING,
            verdict=Verdict(issuance="i-current", kind="bounced", message="pods not ready"),
        ),
        Fail("BounceFailed", "pod bounce failed: pods not ready"),
    ),
    (
        "an issued certificate without a directive finishes",
        observed(status(State.ISSUED)),
        Finish(),
    ),
]


@pytest.mark.parametrize(("o", "expected"), [pytest.param(o, d, id=i) for i, o, d in CASES])
def test_decide(o: Observed, expected: Decision) -> None:
    assert policies.decide(o, now=NOW, timing=TIMING) == expected
