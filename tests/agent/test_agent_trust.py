"""The agent's trust policies, as tables with sentence ids: which `certificate.issued` it refuses
and why (services/agent/trust.py). Every CA and key is made at test time; none is committed."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
from collections.abc import Callable
from typing import Any

import pytest
from agent.agent_testing import P256, make_signing_ca
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from services.agent.handlers import answer_bundle
from services.agent.trust import (
    VALIDITY_SLACK,
    TrustAnchors,
    judge,
    parse_trust_bundle,
)
from shared.controller.policy import Finding
from shared.events import CertificateIssuedData
from shared.pki import (
    Bundle,
    BundleInfo,
    SigningCA,
    build_csr,
    check_bundle,
    generate_private_key,
    private_key_to_pem,
    serial_hex,
    sign_intermediate,
)

REF = "meshtrust-system/meshtrust-trust-bundle"
HOSTS = ["spiffe://cluster.local/ns/istio-system/sa/citadel"]
ORG = "meshtrust"
DECLARED = dt.timedelta(days=7)


def pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def configmap(roots: str | None) -> dict[str, Any]:
    data = {} if roots is None else {"roots.pem": roots}
    return {"metadata": {"name": "meshtrust-trust-bundle"}, "data": data}


@dataclasses.dataclass(frozen=True)
class World:
    pinned: SigningCA
    attacker: SigningCA
    anchors: TrustAnchors


@pytest.fixture(scope="module")
def world() -> World:
    pinned, attacker = make_signing_ca(), make_signing_ca()
    anchors = parse_trust_bundle(configmap(pem(pinned.root)), ref=REF)
    assert isinstance(anchors, TrustAnchors)
    return World(pinned, attacker, anchors)


# --- the bundle ConfigMap -----------------------------------------------------------------------


def test_a_bundle_of_two_roots_pins_both(world: World) -> None:
    both = parse_trust_bundle(configmap(pem(world.pinned.root) + pem(world.attacker.root)), ref=REF)
    assert isinstance(both, TrustAnchors)
    assert len(both.fingerprints) == 2
    assert world.anchors.fingerprints < both.fingerprints


@pytest.mark.parametrize(
    ("roots", "reason"),
    [
        (None, "TrustBundleMissing"),
        ("", "TrustBundleInvalid"),
        (
            "-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n",
            "TrustBundleInvalid",
        ),
        ("intermediate", "TrustBundleInvalid"),
    ],
    ids=[
        "no ConfigMap at all",
        "a ConfigMap without roots.pem",
        "roots.pem that is not PEM certificates",
        "roots.pem holding an intermediate, not a root",
    ],
)
def test_an_unusable_bundle_refuses_and_names_the_configmap(
    world: World, roots: str | None, reason: str
) -> None:
    if roots == "intermediate":
        roots = pem(world.pinned.cert)
    raw = None if roots is None else configmap(roots if roots else None)
    outcome = parse_trust_bundle(raw, ref=REF)
    assert isinstance(outcome, Finding)
    assert outcome.reason == reason
    assert REF in outcome.message


# --- answers ------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Case:
    """An answer to our CSR, and what to do to it before it is judged."""

    signer: str = "pinned"
    """Which CA signs: `pinned` (the real issuer) or `attacker`."""
    ttl: dt.timedelta = DECLARED
    hosts: tuple[str, ...] = tuple(HOSTS)
    org: str = ORG
    other_key: bool = False
    """Sign a CSR of another key than ours."""
    data: Callable[[CertificateIssuedData, World], CertificateIssuedData] | None = None
    anchors: Callable[[World], TrustAnchors | Finding] | None = None


def _replace(**changes: Any) -> Callable[[CertificateIssuedData, World], CertificateIssuedData]:
    def apply(data: CertificateIssuedData, world: World) -> CertificateIssuedData:
        values = {k: (v(world) if callable(v) else v) for k, v in changes.items()}
        return data.model_copy(update=values)

    return apply


CASES: list[tuple[str, Case, str | None]] = [
    ("the issuer's answer within policy is installed", Case(), None),
    (
        "a certificate signed by an attacker's root is refused",
        Case(signer="attacker"),
        "UntrustedRoot",
    ),
    (
        "an attacker's chain presented with the pinned root is refused",
        Case(signer="attacker", data=_replace(root_cert_pem=lambda w: pem(w.pinned.root))),
        "RootMismatch",
    ),
    (
        "a root field of two certificates is refused",
        Case(data=_replace(root_cert_pem=lambda w: pem(w.pinned.root) + pem(w.attacker.root))),
        "UntrustedRoot",
    ),
    (
        "a root field that is not PEM is refused",
        Case(data=_replace(root_cert_pem="junk")),
        "UntrustedRoot",
    ),
    (
        "a validity beyond the declared ttl is refused",
        Case(ttl=DECLARED + dt.timedelta(days=1)),
        "ValidityTooLong",
    ),
    (
        "the issuer's backdate for clock skew is within policy",
        Case(ttl=DECLARED + VALIDITY_SLACK / 2),
        None,
    ),
    (
        "a certificate for another key than our CSR's is refused",
        Case(other_key=True),
        "KeyMismatch",
    ),
    (
        "a certificate for other hosts than declared is refused",
        Case(hosts=(*HOSTS, "spiffe://cluster.local/ns/attacker/sa/x")),
        "HostsMismatch",
    ),
    ("a certificate for another org than declared is refused", Case(org="evil"), "OrgMismatch"),
    (
        "an event whose serial is not the certificate's is refused",
        Case(data=_replace(serial_number="abc123")),
        "SerialMismatch",
    ),
    (
        "an event whose dates are not the certificate's is refused",
        Case(data=lambda d, _w: d.model_copy(update={"not_after": d.not_after + DECLARED})),
        "ValidityMismatch",
    ),
    (
        "without a trust bundle every answer is refused",
        Case(anchors=lambda _w: parse_trust_bundle(None, ref=REF)),
        "TrustBundleMissing",
    ),
    (
        "an answer chaining to a second pinned root is installed",
        Case(
            signer="attacker",
            anchors=lambda w: parse_trust_bundle(
                configmap(pem(w.pinned.root) + pem(w.attacker.root)), ref=REF
            ),
        ),
        None,
    ),
]


@pytest.mark.parametrize(("sentence", "case", "reason"), CASES, ids=[c[0] for c in CASES])
async def test_an_answer_is_judged(
    world: World, sentence: str, case: Case, reason: str | None
) -> None:
    now = dt.datetime.now(dt.UTC)
    ours = generate_private_key(P256)
    csr_pem = build_csr(ours, org=ORG, name="istio-ca", hosts=HOSTS)
    signed_key = generate_private_key(P256) if case.other_key else ours
    signed_csr = build_csr(signed_key, org=case.org, name="istio-ca", hosts=list(case.hosts))
    ca = world.pinned if case.signer == "pinned" else world.attacker
    issued = sign_intermediate(
        x509.load_pem_x509_csr(signed_csr),
        ca,
        hosts=list(case.hosts),
        org=case.org,
        name="istio-ca",
        ttl=case.ttl,
        now=now,
    )
    data = CertificateIssuedData(
        name="istio-ca",
        declaration_generation=1,
        attempt=1,
        serial_number=serial_hex(issued.serial),
        certificate_pem=issued.certificate_pem.decode(),
        ca_chain_pem=issued.chain_pem[len(issued.certificate_pem) :].decode(),
        root_cert_pem=issued.root_pem.decode(),
        not_before=issued.not_before,
        not_after=issued.not_after,
    )
    if case.data is not None:
        data = case.data(data, world)
    bundle = answer_bundle(data, private_key_to_pem(ours))

    async def check(b: Bundle) -> BundleInfo:
        return await asyncio.to_thread(check_bundle, b, hosts=HOSTS, org=ORG, now=now)

    outcome = await judge(
        anchors=case.anchors(world) if case.anchors is not None else world.anchors,
        data=data,
        bundle=bundle,
        csr_pem=csr_pem,
        declared=DECLARED,
        check=check,
        now=now,
    )
    if reason is None:
        assert isinstance(outcome, BundleInfo), sentence
        assert serial_hex(outcome.serial) == data.serial_number
    else:
        assert isinstance(outcome, Finding), sentence
        assert outcome.reason == reason, (sentence, outcome)
        assert "PRIVATE" + " KEY" not in outcome.message
