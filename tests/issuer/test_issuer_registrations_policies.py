"""The ClusterRegistration rules as pure decisions (`policies.registration_for`,
`registration_problem` and their place in both chains), table-tested."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from issuer.issuer_testing import declaration
from issuer.registration_testing import registration_body
from issuer.test_issuer_policies import ca, good
from services.issuer.policies import (
    DeclarationInput,
    authorise,
    check_declaration,
    registration_for,
    registration_problem,
)
from services.issuer.registrations import constraints_of, rate_of
from shared.api.registrations import ClusterRegistration
from shared.api.v1alpha2 import IssuedCertificate
from shared.controller.policy import Finding

NS = "meshtrust-system"


def decl(**spec: Any) -> IssuedCertificate:
    return IssuedCertificate.from_object(declaration("east", "istio-ca", **spec))


def reg(**spec: Any) -> ClusterRegistration:
    return ClusterRegistration.from_object(registration_body("east", **spec))


WEST_HOSTS = ["spiffe://west.local/ns/istio-system/sa/istio-ca", "istiod.east.svc"]
CASES: dict[str, tuple[IssuedCertificate, ClusterRegistration, str | None, str]] = {
    "inside every rule": (decl(), reg(), None, ""),
    "an empty registration allows what the issuer allows": (
        decl(hosts=WEST_HOSTS),
        ClusterRegistration.from_object(
            {"kind": "ClusterRegistration", "metadata": {"name": "east", "namespace": NS}}
        ),
        None,
        "",
    ),
    "a CA the registration does not list": (
        decl(signingCertificateSecret={"name": "other-ca", "namespace": NS}),
        reg(),
        "SigningCANotRegistered",
        "signingCertificateSecret meshtrust-system/other-ca is not among the CAs "
        "ClusterRegistration meshtrust-system/east allows (signingCertificateSecrets: "
        "meshtrust-system/root-ca)",
    ),
    "a lifetime above maxTTL": (
        decl(certOptions={"keyAlgorithm": "ECDSA", "keySize": 256, "ttlDays": 91}),
        reg(),
        "TTLAboveRegistration",
        "certOptions asks a lifetime of 91 days, 0:00:00; ClusterRegistration "
        "meshtrust-system/east allows at most 90 days, 0:00:00 (maxTTL 2160h)",
    ),
    "a lifetime of exactly maxTTL": (
        decl(certOptions={"keyAlgorithm": "ECDSA", "keySize": 256, "ttl": "2160h"}),
        reg(),
        None,
        "",
    ),
    "another cluster's SPIFFE ID": (
        decl(hosts=WEST_HOSTS),
        reg(),
        "HostNotRegistered",
        "hosts[0] 'spiffe://west.local/ns/istio-system/sa/istio-ca' is outside "
        "ClusterRegistration meshtrust-system/east: it matches none of the host patterns "
        "(spiffe://east.local/ns/*/sa/*, *.east.svc)",
    ),
    "a DNS name under no pattern": (
        decl(hosts=["www.google.com"]),
        reg(),
        "HostNotRegistered",
        "hosts[0] 'www.google.com' is outside ClusterRegistration meshtrust-system/east: it "
        "matches none of the host patterns",
    ),
    "an IP address under no pattern": (
        decl(hosts=["10.0.0.1"]),
        reg(),
        "HostNotRegistered",
        "hosts[0] '10.0.0.1' is outside",
    ),
    "'*' does not cross a path segment": (
        decl(hosts=["spiffe://east.local/ns/a/b/sa/c"]),
        reg(),
        "HostNotRegistered",
        "matches none of the host patterns",
    ),
    "a pattern that allows what the name constraints do not": (
        decl(hosts=["istiod.west.svc"]),
        reg(hosts=["*"]),
        "HostNotRegistered",
        "hosts[0] 'istiod.west.svc' is outside ClusterRegistration meshtrust-system/east: it "
        "is under none of the DNS suffixes east.svc",
    ),
    "a URI of another trust domain under open patterns": (
        decl(hosts=["spiffe://west.local/ns/a/sa/b"]),
        reg(hosts=[]),
        "HostNotRegistered",
        "its host is not the trust domain east.local",
    ),
}


@pytest.mark.parametrize(
    ("declared", "registration", "reason", "message"), CASES.values(), ids=CASES.keys()
)
def test_registration_rules(
    declared: IssuedCertificate, registration: ClusterRegistration, reason: str | None, message: str
) -> None:
    problem = registration_problem(declared, registration)
    assert (problem.reason if problem else None) == reason
    if problem is not None:
        assert message in problem.message
    # The declaration chain says the same (the CA is usable, the names fit a certificate).
    verdict = check_declaration(
        DeclarationInput(declaration=declared, signing=ca(), registration=registration)
    )
    assert (verdict.reason if verdict else None) == reason


def test_without_a_registration_the_permissive_mode_or_an_actionable_refusal() -> None:
    assert registration_for("east", None, namespace=NS, required=False) is None
    assert registration_problem(decl(hosts=WEST_HOSTS), None) is None
    missing = registration_for("east", None, namespace=NS, required=True)
    assert isinstance(missing, Finding)
    assert missing.reason == "ClusterNotRegistered"
    assert "has no ClusterRegistration meshtrust-system/east" in missing.message
    assert "MESHTRUST_ISSUER_REQUIRE_REGISTRATION" in missing.message
    assert registration_problem(decl(), missing) is missing


def test_an_unreadable_registration_signs_nothing_of_its_cluster() -> None:
    body = registration_body("east", issuance={"perHour": 0, "burst": 1})
    state = registration_for("east", body, namespace=NS, required=False)
    assert isinstance(state, Finding)
    assert state.reason == "RegistrationInvalid"
    assert "ClusterRegistration meshtrust-system/east cannot be read (fields: spec.issuance" in (
        state.message
    )
    assert registration_problem(decl(), state) == state


def test_the_csr_chain_applies_the_registration() -> None:
    base = good()
    assert authorise(base) is None
    west_only = reg(hosts=["spiffe://west.local/ns/*/sa/*"], nameConstraints=None)
    verdict = authorise(replace(base, registration=west_only))
    assert verdict is not None
    assert verdict.reason == "HostNotRegistered"


def test_the_quota_and_the_constraints_a_registration_carries() -> None:
    assert rate_of(None) is None
    assert rate_of(reg()) is None
    assert rate_of(reg(issuance={"perHour": 2, "burst": 1})) == (2.0, 1)
    constraints = constraints_of(reg())
    assert constraints is not None
    assert [n.value for n in constraints.permitted_subtrees or []] == ["east.local", "east.svc"]
    assert constraints_of(reg(nameConstraints=None)) is None
    assert constraints_of(reg(nameConstraints={})) is None
    assert constraints_of(None) is None
