"""The issuer's authorisation chains as tables: one row per sentence, pure functions only."""

from __future__ import annotations

import base64
import datetime as dt
import functools
from dataclasses import replace
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from issuer.issuer_testing import Hierarchy, declaration
from services.issuer.policies import (
    CSR_CHAIN,
    DECLARATION_CHAIN,
    CsrInput,
    DeclarationInput,
    authorise,
    check_declaration,
    forbidden_secret,
    scope_problem,
)
from services.issuer.signer import SigningCAs, chain_fingerprint, missing_secret, sign, ttl_for
from shared.api.v1alpha2 import IssuedCertificate
from shared.controller.policy import Finding
from shared.events import CsrRequestedData
from shared.pki import IssuedCertificate as Signed
from shared.pki import KeyPolicy, SigningCA, build_csr, load_signing_ca

NOW = dt.datetime.now(dt.UTC)
UID = "7d1f3c52-0000-4000-8000-000000000001"


@functools.cache
def ca() -> SigningCA:
    return load_signing_ca(Hierarchy.make(levels=2).secret_data(), now=NOW)


def decl(generation: int = 1, deleting: bool = False, **spec: Any) -> IssuedCertificate:
    body = declaration("east", "istio-ca", **spec)
    body["metadata"].update(uid=UID, generation=generation)
    if deleting:
        body["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    return IssuedCertificate.from_object(body)


def foreign_decl() -> IssuedCertificate:
    """East's declaration naming a CA Secret in kube-system."""
    return decl(signingCertificateSecret={"name": "other-ca", "namespace": "kube-system"})


@functools.cache
def agent_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def csr(*, key: Any = None, org: str | None = None, hosts: list[str] | None = None) -> str:
    spec = decl().spec
    return build_csr(
        key or agent_key(),
        org=spec.org if org is None else org,
        name="istio-ca",
        hosts=list(spec.hosts) if hosts is None else hosts,
    ).decode()


def request(**changes: Any) -> CsrRequestedData:
    base = {
        "name": "istio-ca",
        "declaration_uid": UID,
        "declaration_generation": 1,
        "csr_pem": csr(),
    }
    base.update(changes)
    return CsrRequestedData(**base)


def good() -> CsrInput:
    return CsrInput(
        cluster="east", request=request(), declaration=decl(), signing=ca(), policy=KeyPolicy()
    )


def weak_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505


CSR_CASES: dict[str, tuple[Any, str | None]] = {
    "sign a CSR that matches its declaration": (lambda: good(), None),
    "deny a CSR whose cluster has no such declaration": (
        lambda: replace(good(), declaration=None, signing=None),
        "NoDeclaration",
    ),
    "deny a CSR answering a declaration since re-created": (
        lambda: replace(good(), request=request(declaration_uid="other-uid")),
        "DeclarationReplaced",
    ),
    "deny a CSR for a declaration being deleted": (
        lambda: replace(good(), declaration=decl(deleting=True)),
        "DeclarationDeleted",
    ),
    "deny a CSR answering a superseded generation": (
        lambda: replace(good(), declaration=decl(generation=3), request=request()),
        "SupersededGeneration",
    ),
    "deny a CSR answering a generation never declared": (
        lambda: replace(good(), request=request(declaration_generation=9)),
        "UnknownGeneration",
    ),
    "deny a CSR whose signing Secret is missing": (
        lambda: replace(good(), signing=missing_secret("meshtrust-system", "root-ca")),
        "SigningSecretMissing",
    ),
    "deny a CSR whose signing Secret is invalid": (
        lambda: replace(good(), signing=Finding("SigningSecretInvalid", "bad")),
        "SigningSecretInvalid",
    ),
    "deny a CSR whose signing Secret is outside the signing namespaces, though its CA loaded": (
        lambda: replace(
            good(), declaration=foreign_decl(), signing_namespaces=("meshtrust-system",)
        ),
        "SigningSecretOutOfScope",
    ),
    "sign a CSR whose signing Secret is in one of several signing namespaces": (
        lambda: replace(good(), signing_namespaces=("other-system", "meshtrust-system")),
        None,
    ),
    "sign a CSR whose signing Secret is anywhere when no signing namespace is set": (
        lambda: replace(good(), declaration=foreign_decl(), signing_namespaces=()),
        None,
    ),
    "deny a CSR whose signing Secret the issuer is forbidden to read": (
        lambda: replace(good(), signing=forbidden_secret("meshtrust-system", "root-ca", "no")),
        "SigningSecretForbidden",
    ),
    "deny a CSR whose declaration has an impossible host": (
        lambda: replace(good(), declaration=decl(hosts=["istiod:15012"])),
        "InvalidDeclaration",
    ),
    "deny a CSR asking for other hosts": (
        lambda: replace(good(), request=request(csr_pem=csr(hosts=["spiffe://x/ns/a/sa/b"]))),
        "HostsMismatch",
    ),
    "deny a CSR asking for another org": (
        lambda: replace(good(), request=request(csr_pem=csr(org="evil corp"))),
        "OrgMismatch",
    ),
    "deny a CSR with a weak key": (
        lambda: replace(good(), request=request(csr_pem=csr(key=weak_key()))),
        "WeakKey",
    ),
    "deny a CSR with a curve the policy forbids": (
        lambda: replace(good(), policy=KeyPolicy(ecdsa_curves=frozenset({"secp384r1"}))),
        "UnsupportedKey",
    ),
    "deny text that is no CSR": (
        lambda: replace(good(), request=request(csr_pem="hello")),
        "Malformed",
    ),
}


@pytest.mark.parametrize(("make", "reason"), CSR_CASES.values(), ids=CSR_CASES.keys())
def test_csr_chain(make: Any, reason: str | None) -> None:
    verdict = authorise(make())
    if reason is None:
        assert verdict is None
    else:
        assert verdict is not None
        assert verdict.reason == reason
        assert verdict.message
        assert "PRIVATE KEY" not in verdict.message


def test_the_csr_chain_checks_identity_before_the_csr() -> None:
    # A request for a missing declaration with a bad CSR says the declaration is missing: the
    # cluster learns nothing about what another cluster declared from CSR errors.
    value = replace(good(), declaration=None, signing=None, request=request(csr_pem="garbage"))
    verdict = authorise(value)
    assert verdict is not None
    assert verdict.reason == "NoDeclaration"
    assert CSR_CHAIN[0].__name__ == "declaration_exists"


DECLARATION_CASES: dict[str, tuple[Any, str | None]] = {
    "publish a declaration whose signing CA loads": (
        lambda: DeclarationInput(declaration=decl(), signing=ca()),
        None,
    ),
    "fail a declaration whose signing Secret is missing": (
        lambda: DeclarationInput(
            declaration=decl(), signing=missing_secret("meshtrust-system", "x")
        ),
        "SigningSecretMissing",
    ),
    "fail a declaration whose signing Secret cannot sign": (
        lambda: DeclarationInput(
            declaration=decl(), signing=Finding("SigningSecretInvalid", "NotCA")
        ),
        "SigningSecretInvalid",
    ),
    "fail a declaration whose signing Secret is outside the signing namespaces": (
        lambda: DeclarationInput(
            declaration=foreign_decl(), signing=ca(), signing_namespaces=("meshtrust-system",)
        ),
        "SigningSecretOutOfScope",
    ),
    "fail a declaration whose signing Secret is in another cluster's namespace": (
        lambda: DeclarationInput(
            declaration=decl(signingCertificateSecret={"name": "west-ca", "namespace": "west"}),
            signing=ca(),
            signing_namespaces=("meshtrust-system",),
        ),
        "SigningSecretOutOfScope",
    ),
    "publish a declaration whose signing Secret is anywhere when no signing namespace is set": (
        lambda: DeclarationInput(declaration=foreign_decl(), signing=ca()),
        None,
    ),
    "fail a declaration whose signing Secret the issuer is forbidden to read": (
        lambda: DeclarationInput(
            declaration=decl(), signing=forbidden_secret("meshtrust-system", "root-ca", "no")
        ),
        "SigningSecretForbidden",
    ),
    "fail a declaration with a host no certificate can carry": (
        lambda: DeclarationInput(declaration=decl(hosts=["a b"]), signing=ca()),
        "InvalidDeclaration",
    ),
    "fail a declaration with an org too long for a subject": (
        lambda: DeclarationInput(declaration=decl(org="o" * 65), signing=ca()),
        "InvalidDeclaration",
    ),
}


@pytest.mark.parametrize(
    ("make", "reason"), DECLARATION_CASES.values(), ids=DECLARATION_CASES.keys()
)
def test_declaration_chain(make: Any, reason: str | None) -> None:
    verdict = check_declaration(make())
    assert (verdict is not None) is (reason is not None)
    if verdict is not None:
        assert verdict.reason == reason
    assert len(DECLARATION_CHAIN) == 4  # scope, registration, usable CA, names


def test_an_out_of_scope_secret_is_refused_with_the_rule_and_both_fixes() -> None:
    problem = scope_problem("kube-system", "other-ca", ("meshtrust-system",))
    assert problem is not None
    assert problem.reason == "SigningSecretOutOfScope"
    assert "kube-system/other-ca is outside the issuer's signing namespaces" in problem.message
    assert "MESHTRUST_ISSUER_SIGNING_NAMESPACES" in problem.message
    assert "CA Secret in meshtrust-system" in problem.message
    assert "add namespace kube-system" in problem.message
    assert scope_problem("meshtrust-system", "root-ca", ("meshtrust-system",)) is None
    assert scope_problem("kube-system", "other-ca", ()) is None


def test_a_forbidden_secret_says_what_to_grant() -> None:
    problem = forbidden_secret("meshtrust-system", "root-ca", 'secrets "root-ca" is forbidden')
    assert problem.reason == "SigningSecretForbidden"
    assert "may not read signingCertificateSecret meshtrust-system/root-ca" in problem.message
    assert "Grant the issuer's ServiceAccount get on that Secret" in problem.message


def test_the_ttl_is_the_declared_lifetime_clamped_by_the_maximum() -> None:
    assert ttl_for(decl(), max_ttl=dt.timedelta(days=365)) == dt.timedelta(days=30)
    assert ttl_for(decl(), max_ttl=dt.timedelta(days=7)) == dt.timedelta(days=7)
    short = decl(certOptions={"keyAlgorithm": "ECDSA", "keySize": 256, "ttl": "90s"})
    assert ttl_for(short, max_ttl=dt.timedelta(days=7)) == dt.timedelta(seconds=90)


def test_signing_uses_the_declaration_not_the_csr_for_names() -> None:
    issued = sign(
        csr(),
        ca(),
        decl(),
        max_ttl=dt.timedelta(days=365),
        path_len=0,
        backdate=dt.timedelta(minutes=5),
        now=NOW,
    )
    assert isinstance(issued, Signed)
    assert issued.signing_ca_fingerprint == ca().fingerprint
    assert "OU=istio-ca" in issued.certificate.subject.rfc4514_string()


def test_loaded_cas_are_cached_by_secret_version_and_problems_say_which_secret() -> None:
    cas = SigningCAs()
    data = {
        k: base64.b64encode(v).decode() for k, v in Hierarchy.make(levels=1).secret_data().items()
    }
    secret = {"metadata": {"uid": "s-1", "resourceVersion": "5"}, "data": data}
    first, fp1 = cas.load(secret, namespace="ns", name="ca", now=NOW)
    second, fp2 = cas.load(secret, namespace="ns", name="ca", now=NOW)
    assert first is second
    assert isinstance(first, SigningCA)
    assert fp1 == fp2 == chain_fingerprint(first)
    broken = {"metadata": {"uid": "s-1", "resourceVersion": "6"}, "data": {"ca-cert.pem": "!!"}}
    problem, fp = cas.load(broken, namespace="ns", name="ca", now=NOW)
    assert isinstance(problem, Finding)
    assert (problem.reason, fp) == ("SigningSecretInvalid", None)
    assert "ns/ca" in problem.message
    missing, _ = cas.load(None, namespace="ns", name="gone", now=NOW)
    assert isinstance(missing, Finding)
    assert missing.reason == "SigningSecretMissing"


def test_a_cached_ca_that_has_expired_since_is_refused() -> None:
    cas = SigningCAs()
    data = {
        k: base64.b64encode(v).decode() for k, v in Hierarchy.make(levels=1).secret_data().items()
    }
    secret = {"metadata": {"uid": "s-1", "resourceVersion": "5"}, "data": data}
    loaded, _ = cas.load(secret, namespace="ns", name="ca", now=NOW)
    assert isinstance(loaded, SigningCA)
    later, fp = cas.load(secret, namespace="ns", name="ca", now=NOW + dt.timedelta(days=4000))
    assert isinstance(later, Finding)
    assert (later.reason, fp) == ("SigningSecretInvalid", None)
