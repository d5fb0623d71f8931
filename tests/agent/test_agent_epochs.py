"""The trust epoch and re-adoption, as tables of pure decisions (services/agent/policies.py,
reissue.py, desired_plan.py, messages.py): a change of the epoch asked for re-issues as a new
generation does; the CSR carries the epoch of its issuance, also when sent again after a restart;
a new IssuedCertificate re-adopts a valid certificate of ours in its issued Secret when the
re-issuance chain would keep it."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest
from agent.agent_policy_cases import (
    GOOD,
    INFO,
    NOW,
    TIMING,
    key,
    observed,
    requested,
    status,
)
from agent.test_agent_desired_plan import KEY, SPEC, entry, obj

from services.agent import policies
from services.agent.desired_plan import create_body, differs, replace_body
from services.agent.messages import Messages
from services.agent.objects import TRUST_EPOCH, KeySecret
from services.agent.policies import Decision, Issue, IssuedView, Observed, Readopt, Wait
from shared.api.meta import ObjectKey
from shared.api.v1alpha2 import IssuedCertificateStatus, State
from shared.events import DesiredObject

E1, E2 = "rot.0123abcd.add", "rot.0123abcd.move"
PENDING = IssuedCertificateStatus()


def issued(**changes: object) -> IssuedView:
    return dataclasses.replace(GOOD, **changes)  # type: ignore[arg-type]


def new(**values: object) -> Observed:
    """A new object (PENDING) of declaration generation 1, its issued Secret holding a valid
    certificate of ours that answered generation 1, unless `values` say otherwise."""
    values.setdefault("issued", issued(declaration_generation=1))
    return observed(PENDING, declaration_generation=1, **values)


CASES: list[tuple[str, Observed, Decision]] = [
    (
        "a finished certificate of another epoch than asked for is issued again",
        observed(status(State.FINISHED), trust_epoch=E2, issued=issued(epoch=E1)),
        Issue(
            "TrustEpochChanged",
            f"the issuer asks for trust epoch {E2!r}; the certificate was issued under {E1!r}",
        ),
    ),
    (
        "an epoch removed after a rotation issues again too",
        observed(status(State.FINISHED), issued=issued(epoch=E1)),
        Issue(
            "TrustEpochChanged",
            f"the issuer asks for trust epoch '(none)'; the certificate was issued under {E1!r}",
        ),
    ),
    (
        "a certificate of the epoch asked for is kept",
        observed(status(State.FINISHED), trust_epoch=E1, issued=issued(epoch=E1)),
        Wait(TIMING.max_requeue),
    ),
    (
        "outside any rotation nothing changes",
        observed(status(State.FINISHED)),
        Wait(TIMING.max_requeue),
    ),
    (
        "an epoch change while the CSR is out starts a new issuance",
        requested(trust_epoch=E2, key=key(trust_epoch=E1)),
        Issue("TrustEpochChanged", "the issuer asks for another trust epoch meanwhile"),
    ),
    (
        "a CSR out for the epoch asked for waits for its answer",
        requested(trust_epoch=E1, key=key(trust_epoch=E1)),
        Wait(50.0),
    ),
    (
        "the key Secret of an interrupted start for the epoch asked for is adopted",
        observed(
            status(State.FINISHED),
            trust_epoch=E2,
            issued=issued(epoch=E1),
            key=key("i-next", trust_epoch=E2),
        ),
        Issue(
            "TrustEpochChanged",
            f"the issuer asks for trust epoch {E2!r}; the certificate was issued under {E1!r}",
            adopt=key("i-next", trust_epoch=E2),
        ),
    ),
    (
        "the key Secret of an interrupted start for another epoch is not adopted",
        observed(
            status(State.FINISHED),
            trust_epoch=E2,
            issued=issued(epoch=E1),
            key=key("i-next", trust_epoch=E1),
        ),
        Issue(
            "TrustEpochChanged",
            f"the issuer asks for trust epoch {E2!r}; the certificate was issued under {E1!r}",
        ),
    ),
    (
        "a new object whose issued Secret holds a valid certificate of ours re-adopts it",
        new(),
        Readopt("i-current", INFO),
    ),
    (
        "re-adoption keeps the epoch it was issued under when that is the one asked for",
        new(trust_epoch=E1, issued=issued(epoch=E1, declaration_generation=1)),
        Readopt("i-current", INFO),
    ),
    (
        "a new object does not re-adopt a certificate of another epoch",
        new(trust_epoch=E2, issued=issued(epoch=E1, declaration_generation=1)),
        Issue("Pending", "a new IssuedCertificate"),
    ),
    (
        "a new object does not re-adopt a certificate of another signing CA",
        new(
            signing_chain="b" * 64, issued=issued(signing_chain="a" * 64, declaration_generation=1)
        ),
        Issue("Pending", "a new IssuedCertificate"),
    ),
    (
        "a new object does not re-adopt a certificate of another declaration generation",
        new(issued=issued(declaration_generation=2)),
        Issue("Pending", "a new IssuedCertificate"),
    ),
    (
        "a new object does not re-adopt a certificate whose declaration generation is unknown",
        new(issued=issued()),
        Issue("Pending", "a new IssuedCertificate"),
    ),
    (
        "a new object does not re-adopt a Secret failing the bundle check",
        new(issued=issued(info=None, problem="UntrustedRoot: no", declaration_generation=1)),
        Issue("Pending", "a new IssuedCertificate"),
    ),
    (
        "a new object does not re-adopt a Secret that no issuance of ours wrote",
        new(issued=issued(issuance=None, declaration_generation=1)),
        Issue("Pending", "a new IssuedCertificate"),
    ),
    (
        "a new object does not re-adopt a certificate due for renewal",
        new(
            issued=issued(
                info=dataclasses.replace(INFO, not_after=NOW + dt.timedelta(minutes=1)),
                declaration_generation=1,
            )
        ),
        Issue("Pending", "a new IssuedCertificate"),
    ),
]


@pytest.mark.parametrize(("sentence", "case", "expected"), CASES, ids=[c[0] for c in CASES])
def test_decide(sentence: str, case: Observed, expected: Decision) -> None:
    assert policies.decide(case, now=NOW, timing=TIMING) == expected, sentence


# --- desired state ------------------------------------------------------------------------------


class _WithEpoch(DesiredObject):
    """A desired entry carrying the epoch as the issuer's rotation declares it."""

    trust_epoch: str | None = None


def test_the_desired_epoch_is_copied_onto_the_issued_certificate() -> None:
    declared = _WithEpoch(**entry().model_dump(), trust_epoch=E1)
    assert create_body(KEY, declared)["metadata"]["annotations"][TRUST_EPOCH] == E1
    assert differs(KEY, obj(), declared), "an object without the epoch is brought into line"
    assert not differs(KEY, obj(annotations={TRUST_EPOCH: E1}), declared)
    assert differs(KEY, obj(annotations={TRUST_EPOCH: E2}), declared)


def test_an_epoch_no_longer_declared_is_removed() -> None:
    current = obj(spec=SPEC, annotations={TRUST_EPOCH: E1, "team": "mesh"})
    assert differs(KEY, current, entry())
    notes = replace_body(KEY, current, entry())["metadata"]["annotations"]
    assert TRUST_EPOCH not in notes
    assert notes["team"] == "mesh"


# --- the CSR carries its issuance's epoch ---------------------------------------------------------


@pytest.mark.parametrize(
    ("epoch", "sent"), [(E1, E1), ("", None)], ids=["in a rotation", "outside"]
)
def test_the_csr_carries_the_epoch_recorded_with_its_key(epoch: str, sent: str | None) -> None:
    """Built from the key Secret: a re-send after a restart carries the same epoch."""
    secret = KeySecret(material=key(trust_epoch=epoch), key_pem=b"", csr_pem=b"csr", raw={})
    ic = {"metadata": {"name": "istio-ca", "uid": "u", "generation": 1}}
    message = Messages(source="agent/east-0", cluster="east").csr_requested(
        ObjectKey("istio-system", "istio-ca"), ic, secret, attempt=2
    )
    assert message.data.trust_epoch == sent
    assert ("trust_epoch" in message.data.model_dump(mode="json")) is bool(sent)
