"""Signing per rotation step: which CA signs, which roots go out, which cross certificate."""

from __future__ import annotations

import threading

import pytest
from cryptography import x509

from services.issuer.issued import IssuedRecord
from services.issuer.rotating import Rotations
from services.issuer.steps import CROSS_SIGNED_FIELD, StepCA, cross_certificate, step_ca
from shared.api.meta import ObjectKey
from shared.api.rotations import CertificateRotation, Step, epoch_of
from shared.controller.policy import Finding
from shared.pki import SigningCA, cross_sign, load_signing_ca, vouched_roots
from shared.pki.chains import verify_path
from tests.pki.pki_testing import NOW, P256, Issuer, key, key_pem, make_ca, pem


def root_ca(cn: str, seed: int) -> tuple[Issuer, SigningCA]:
    root = make_ca(cn=cn, private_key=key(P256, seed))
    data = {
        "ca-cert.pem": pem(root.cert),
        "ca-key.pem": key_pem(root.key),
        "root-cert.pem": pem(root.cert),
    }
    return root, load_signing_ca(data, now=NOW)


def intermediate_ca(cn: str, seed: int, root: Issuer) -> SigningCA:
    ca = make_ca(cn=cn, private_key=key(P256, seed), parent=root)
    data = {
        "ca-cert.pem": pem(ca.cert),
        "ca-key.pem": key_pem(ca.key),
        "cert-chain.pem": pem(ca.cert, root.cert),
        "root-cert.pem": pem(root.cert),
    }
    return load_signing_ca(data, now=NOW)


OLD, OLD_CA = root_ca("old root", 300)
NEW, NEW_CA = root_ca("new root", 301)
CROSS = cross_sign(NEW.cert, by=OLD_CA, now=NOW)


def roots(pem_bytes: bytes) -> list[x509.Name]:
    return [c.subject for c in x509.load_pem_x509_certificates(pem_bytes)]


OLD_NAME, NEW_NAME = OLD.cert.subject, NEW.cert.subject


@pytest.mark.parametrize(
    ("step", "signer", "bundle", "crossed"),
    [
        (Step.ADD, "old", [OLD_NAME, NEW_NAME], True),
        (Step.MOVE, "new", [OLD_NAME, NEW_NAME], True),
        (Step.DROP, "new", [NEW_NAME], True),
        (Step.BACK, "old", [OLD_NAME, NEW_NAME], True),
        (Step.UNDO, "old", [OLD_NAME], False),
    ],
)
def test_each_step_signs_with_its_ca_roots_and_cross_certificate(
    step: Step, signer: str, bundle: list[x509.Name], crossed: bool
) -> None:
    got = step_ca(step, old=OLD_CA, new=NEW_CA, cross=CROSS)
    assert isinstance(got, StepCA)
    assert got.ca is (OLD_CA if signer == "old" else NEW_CA)
    assert roots(got.roots_pem) == bundle
    if not crossed:
        assert got.cross_signed_pem is None
        return
    assert got.cross_signed_pem is not None
    sent = x509.load_pem_x509_certificates(got.cross_signed_pem.encode())
    # What an agent pinning only the old root concludes from this answer: every root vouched.
    every = x509.load_pem_x509_certificates(got.roots_pem)
    vouched = vouched_roots(every, pinned=[OLD.cert], cross_signed=sent, now=NOW)
    assert vouched.untrusted == ()


def test_an_intermediate_only_rotation_reissues_under_the_same_root_without_cross() -> None:
    root, _ = root_ca("the root", 310)
    old = intermediate_ca("old intermediate", 311, root)
    new = intermediate_ca("new intermediate", 312, root)
    got = step_ca(Step.REISSUE, old=old, new=new, cross=None)
    assert isinstance(got, StepCA)
    assert got.ca is new
    assert roots(got.roots_pem) == [root.cert.subject]
    assert got.cross_signed_pem is None


def test_a_crossing_step_without_a_cross_certificate_is_refused() -> None:
    got = step_ca(Step.MOVE, old=OLD_CA, new=NEW_CA, cross=None)
    assert isinstance(got, Finding)
    assert CROSS_SIGNED_FIELD in got.message


def test_the_cross_certificate_is_made_with_the_old_roots_key() -> None:
    made = cross_certificate(OLD_CA, NEW_CA, {}, now=NOW)
    assert isinstance(made, x509.Certificate)
    assert made.subject == NEW.cert.subject
    verify_path([made, OLD.cert], now=NOW)


def test_an_intermediate_old_ca_takes_the_cross_certificate_from_the_new_secret() -> None:
    old_intermediate = intermediate_ca("old intermediate", 320, OLD)
    missing = cross_certificate(old_intermediate, NEW_CA, {}, now=NOW)
    assert isinstance(missing, Finding)
    assert CROSS_SIGNED_FIELD in missing.message
    given = cross_certificate(old_intermediate, NEW_CA, {CROSS_SIGNED_FIELD: pem(CROSS)}, now=NOW)
    assert given == CROSS
    # A cross certificate by another root does not pass for one by the old root.
    _, stranger = root_ca("stranger", 321)
    forged = cross_sign(NEW.cert, by=stranger, now=NOW)
    refused = cross_certificate(
        old_intermediate, NEW_CA, {CROSS_SIGNED_FIELD: pem(forged)}, now=NOW
    )
    assert isinstance(refused, Finding)
    junk = cross_certificate(old_intermediate, NEW_CA, {CROSS_SIGNED_FIELD: b"junk"}, now=NOW)
    assert isinstance(junk, Finding)


def test_a_rotation_under_way_covers_a_secret_before_an_ended_one() -> None:
    def body(name: str, created: str, status: dict[str, object]) -> dict[str, object]:
        ref = {"namespace": "meshtrust-system", "name": "cacerts"}
        return {
            "metadata": {"name": name, "uid": f"{name}-uid0000", "creationTimestamp": created},
            "spec": {"signingCertificateSecret": ref, "newSigningCertificateSecret": ref},
            "status": status,
        }

    old = body(
        "old",
        "2026-01-01T00:00:00Z",
        {"phase": "RolledBack", "clusters": [{"name": "east", "step": "undo"}]},
    )
    new = body(
        "new",
        "2026-06-01T00:00:00Z",
        {"phase": "AddingNewRoot", "clusters": [{"name": "east", "step": "add"}]},
    )

    class Cache:
        def __init__(self, *items: dict[str, object]) -> None:
            self.objects = items

        def items(self) -> tuple[dict[str, object], ...]:
            return self.objects

    rotations = Rotations.__new__(Rotations)
    secret = ObjectKey("meshtrust-system", "cacerts")
    for order in ((old, new), (new, old)):
        rotations.informer = Cache(*order)  # type: ignore[assignment]
        covered = rotations.covering(secret, "east")
        assert covered is not None
        rotation, step = covered
        assert isinstance(rotation, CertificateRotation)
        assert (rotation.metadata.name, step) == ("new", Step.ADD)
    rotations.informer = Cache(old)  # type: ignore[assignment]
    assert rotations.covering(secret, "east") is not None
    assert rotations.covering(secret, "west") is None


def test_an_answer_carries_the_cross_certificate_of_its_own_rotation() -> None:
    # Two rotations one after the other: old -> new, then new -> newer. An answer of the second
    # (root-cert.pem = new + newer) must carry newer-by-new, not the first rotation's
    # new-by-old, which also names a root of that bundle and vouches for nothing new.
    _, newer_ca = root_ca("newer root", 302)
    first = cross_sign(NEW_CA.root, by=OLD_CA, now=NOW)
    second = cross_sign(newer_ca.root, by=NEW_CA, now=NOW)
    rotations = Rotations.__new__(Rotations)
    rotations._cross = {  # as cross_for makes them (it needs the Kubernetes cache)
        "aaaaaaaa-0000-0000-0000-000000000001": first,
        "bbbbbbbb-0000-0000-0000-000000000002": second,
    }
    rotations._lock = threading.Lock()
    uid = "bbbbbbbb-0000-0000-0000-000000000002"
    record = IssuedRecord(
        cluster="east", name="istio-cacerts", issuance="i", declaration_uid="u",
        declaration_generation=1, csr_sha256="0", serial_number="1", certificate_pem="",
        ca_chain_pem="", root_cert_pem=(pem(NEW_CA.root) + pem(newer_ca.root)).decode(),
        not_before=NOW, not_after=NOW, signing_ca_fingerprint="0", signed_by="issuer-0",
        signed_at=NOW, trust_epoch=epoch_of("second", uid, Step.ADD),
    )  # fmt: skip
    sent = rotations.cross_signed(record)
    assert sent is not None
    assert x509.load_pem_x509_certificate(sent.encode()) == second
    vouched = vouched_roots([newer_ca.root], pinned=[NEW_CA.root], cross_signed=[second], now=NOW)
    assert vouched.untrusted == ()
