"""The agent's judgement of the issuer's answers during a root rotation (services/agent/trust.py,
docs/rotation.md): each step's answer is accepted on the authority of the pinned (old) root, and
forged variants are refused as UntrustedRoot. CAs are made at test time."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
from collections.abc import Callable

import pytest
from agent.agent_rotation import Rotation, answer, cert_pem, make_rotation
from cryptography import x509

from services.agent.handlers import answer_bundle
from services.agent.trust import TrustAnchors, check_root, judge, parse_trust_bundle
from shared.controller.policy import Finding
from shared.events import CertificateIssuedData
from shared.pki import (
    Bundle,
    BundleInfo,
    SigningCA,
    build_csr,
    check_bundle,
    cross_sign,
    generate_private_key,
    private_key_to_pem,
)
from shared.pki.keys import KeyAlgorithm, KeySpec
from shared.runtime.clock import utcnow

REF = "meshtrust-system/meshtrust-trust-bundle"
HOSTS = ["spiffe://cluster.local/ns/istio-system/sa/citadel"]
ORG = "meshtrust"
DECLARED = dt.timedelta(days=7)
P256 = KeySpec(algorithm=KeyAlgorithm.ECDSA, size=256)


@pytest.fixture(scope="module")
def rot() -> Rotation:
    return make_rotation()


def anchors_of(roots_pem: str) -> TrustAnchors:
    anchors = parse_trust_bundle({"data": {"roots.pem": roots_pem}}, ref=REF)
    assert isinstance(anchors, TrustAnchors)
    return anchors


@dataclasses.dataclass(frozen=True)
class Case:
    step: str
    """The step whose (CA, roots, cross certificate) the answer starts from."""
    signer: Callable[[Rotation], SigningCA] | None = None
    roots: Callable[[Rotation], str] | None = None
    cross: Callable[[Rotation], str | None] | None = None
    pinned: Callable[[Rotation], str] = lambda r: r.pinned_pem


def _self_vouched(r: Rotation) -> str:
    return cert_pem(cross_sign(r.attacker_root.cert, by=r.attacker_root, now=utcnow()))


def _new_root_vouched_by_attacker(r: Rotation) -> str:
    return cert_pem(cross_sign(r.new_root.cert, by=r.attacker_root, now=utcnow()))


CASES: list[tuple[str, Case, str | None]] = [
    ("outside a rotation, the pinned root alone is accepted", Case(""), None),
    ("add: old CA, old + new roots, the cross certificate: accepted", Case("add"), None),
    ("move: new CA, old + new roots, accepted through the cross certificate", Case("move"), None),
    (
        "drop: new CA, the new root alone, accepted through the cross certificate",
        Case("drop"),
        None,
    ),
    ("back: old CA, old + new roots: accepted", Case("back"), None),
    ("undo: old CA, the old root alone: accepted", Case("undo"), None),
    (
        "after re-pinning (old + new pinned), drop is accepted without a cross certificate",
        Case(
            "drop",
            cross=lambda _r: None,
            pinned=lambda r: cert_pem(r.old_root.cert, r.new_root.cert),
        ),
        None,
    ),
    (
        "after re-pinning the new root alone, drop is accepted without a cross certificate",
        Case("drop", cross=lambda _r: None, pinned=lambda r: cert_pem(r.new_root.cert)),
        None,
    ),
    (
        "add without the cross certificate is refused",
        Case("add", cross=lambda _r: None),
        "UntrustedRoot",
    ),
    (
        "move without the cross certificate is refused",
        Case("move", cross=lambda _r: None),
        "UntrustedRoot",
    ),
    (
        "drop without the cross certificate is refused",
        Case("drop", cross=lambda _r: None),
        "UntrustedRoot",
    ),
    (
        "an attacker's root vouched for by its own cross certificate is refused",
        Case(
            "move",
            signer=lambda r: r.attacker,
            roots=lambda r: cert_pem(r.old_root.cert, r.attacker_root.cert),
            cross=_self_vouched,
        ),
        "UntrustedRoot",
    ),
    (
        "the new root vouched for by a cross certificate from an unpinned root is refused",
        Case("move", cross=_new_root_vouched_by_attacker),
        "UntrustedRoot",
    ),
    (
        "an attacker's root beside the old one, with the genuine cross certificate, is refused",
        Case("add", roots=lambda r: cert_pem(r.old_root.cert, r.attacker_root.cert)),
        "UntrustedRoot",
    ),
    (
        "an attacker's chain with the genuine roots and cross certificate is refused",
        Case("move", signer=lambda r: r.attacker),
        "RootMismatch",
    ),
    (
        "a cross certificate that is not PEM is refused",
        Case("move", cross=lambda _r: "junk"),
        "UntrustedRoot",
    ),
]


@pytest.mark.parametrize(("sentence", "case", "reason"), CASES, ids=[c[0] for c in CASES])
async def test_a_rotation_answer_is_judged(
    rot: Rotation, sentence: str, case: Case, reason: str | None
) -> None:
    now = utcnow()
    ours = generate_private_key(P256)
    csr_pem = build_csr(ours, org=ORG, name="istio-ca", hosts=HOSTS)
    ca, roots, cross = rot.step(case.step)
    data: CertificateIssuedData = answer(
        x509.load_pem_x509_csr(csr_pem),
        ca=case.signer(rot) if case.signer else ca,
        roots_pem=case.roots(rot) if case.roots else roots,
        cross_pem=case.cross(rot) if case.cross else cross,
        hosts=HOSTS,
        org=ORG,
        name="istio-ca",
        ttl=DECLARED,
    )
    bundle = answer_bundle(data, private_key_to_pem(ours))

    async def check(b: Bundle) -> BundleInfo:
        return await asyncio.to_thread(check_bundle, b, hosts=HOSTS, org=ORG, now=now)

    outcome = await judge(
        anchors=anchors_of(case.pinned(rot)),
        data=data,
        bundle=bundle,
        csr_pem=csr_pem,
        declared=DECLARED,
        check=check,
        now=now,
    )
    if reason is None:
        assert isinstance(outcome, BundleInfo), (sentence, outcome)
    else:
        assert isinstance(outcome, Finding), sentence
        assert outcome.reason == reason, (sentence, outcome)


def test_an_expired_cross_certificate_vouches_for_nothing(rot: Rotation) -> None:
    later = rot.cross.not_valid_after_utc + dt.timedelta(seconds=1)
    roots = cert_pem(rot.old_root.cert, rot.new_root.cert)
    anchors = anchors_of(rot.pinned_pem)
    assert check_root(anchors, roots, cert_pem(rot.cross), now=utcnow()) is None
    refused = check_root(anchors, roots, cert_pem(rot.cross), now=later)
    assert isinstance(refused, Finding)
    assert refused.reason == "UntrustedRoot"
    assert REF in refused.message
