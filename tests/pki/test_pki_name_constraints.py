"""Name constraints on issued intermediates, checked by `openssl verify` and `pkilint`.

An intermediate signed with `name_constraints(trust_domain=..., dns_suffixes=...)` carries a
critical NameConstraints extension with exactly those permitted subtrees; a workload leaf it
signs for another trust domain (or a DNS name under no suffix) fails path validation with the
command Istio operators run, and a leaf inside passes. The leaves have no CN (OpenSSL would
check a host-like CN against the DNS subtrees too).
"""

from __future__ import annotations

import datetime as dt
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from pki.pki_testing import DAY, NOW, ORG, P256, hierarchy, key, pem
from pki.test_pki_independent import OPENSSL, not_tolerated, pkilint_errors

from shared.pki import IssuedCertificate, build_csr, check_csr, load_signing_ca, name_constraints
from shared.pki import sign_intermediate as sign
from shared.pki.policy import KeyPolicy

HOSTS = ("spiffe://east.example/ns/istio-system/sa/istiod", "istiod.istio-system.svc.east.example")


def intermediate(
    trust_domain: str | None = None, dns_suffixes: tuple[str, ...] = ()
) -> tuple[IssuedCertificate, ec.EllipticCurvePrivateKey]:
    """An intermediate for `HOSTS`, constrained when given a trust domain or suffixes."""
    constrained = trust_domain is not None or dns_suffixes
    agent_key = key(P256, 7)
    assert isinstance(agent_key, ec.EllipticCurvePrivateKey)
    csr = check_csr(
        build_csr(agent_key, org=ORG, name="east-ca", hosts=HOSTS),
        hosts=HOSTS,
        org=ORG,
        policy=KeyPolicy(),
    )
    ca = load_signing_ca(hierarchy(levels=2).secret_data("istio"), now=NOW)
    issued = sign(
        csr,
        ca,
        hosts=HOSTS,
        org=ORG,
        name="east-ca",
        ttl=90 * DAY,
        now=NOW,
        constraints=(
            name_constraints(trust_domain=trust_domain, dns_suffixes=dns_suffixes)
            if constrained
            else None
        ),
    )
    return issued, agent_key


def leaf(
    issuer: IssuedCertificate, issuer_key: ec.EllipticCurvePrivateKey, name: x509.GeneralName
) -> bytes:
    workload = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "workload")])
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.certificate.subject)
        .public_key(workload.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(hours=1))
        .not_valid_after(NOW + DAY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName([name]), critical=False)
        .sign(issuer_key, hashes.SHA256())
    )
    return pem(certificate)


def verify(
    tmp_path: Path, issued: IssuedCertificate, leaf_pem: bytes
) -> subprocess.CompletedProcess[str]:
    assert OPENSSL is not None, "openssl must be installed for these tests"
    (tmp_path / "root.pem").write_bytes(issued.root_pem)
    (tmp_path / "chain.pem").write_bytes(issued.chain_pem)
    (tmp_path / "leaf.pem").write_bytes(leaf_pem)
    return subprocess.run(
        [
            OPENSSL,
            "verify",
            "-attime",
            str(int(NOW.timestamp())),
            "-CAfile",
            str(tmp_path / "root.pem"),
            "-untrusted",
            str(tmp_path / "chain.pem"),
            str(tmp_path / "leaf.pem"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_extension_is_critical_with_exactly_the_permitted_subtrees() -> None:
    issued, _ = intermediate(trust_domain="east.example", dns_suffixes=("east.example",))
    extension = issued.certificate.extensions.get_extension_for_class(x509.NameConstraints)
    assert extension.critical
    assert extension.value.permitted_subtrees == [
        x509.UniformResourceIdentifier("east.example"),
        x509.DNSName("east.example"),
    ]
    assert extension.value.excluded_subtrees is None
    unconstrained, _ = intermediate()
    with pytest.raises(x509.ExtensionNotFound):
        unconstrained.certificate.extensions.get_extension_for_class(x509.NameConstraints)


def test_constraints_need_a_subtree() -> None:
    with pytest.raises(ValueError, match="trust domain or a DNS suffix"):
        name_constraints()


INSIDE = [
    x509.UniformResourceIdentifier("spiffe://east.example/ns/default/sa/web"),
    x509.DNSName("web.default.svc.east.example"),
    x509.DNSName("east.example"),
]
OUTSIDE = [
    x509.UniformResourceIdentifier("spiffe://west.example/ns/default/sa/web"),
    x509.UniformResourceIdentifier("spiffe://sub.east.example/ns/default/sa/web"),
    x509.DNSName("web.default.svc.west.example"),
    x509.DNSName("evileast.example"),
]


@pytest.mark.parametrize("name", INSIDE, ids=lambda n: n.value)
def test_a_leaf_inside_the_constraints_verifies(tmp_path: Path, name: x509.GeneralName) -> None:
    issued, agent_key = intermediate(trust_domain="east.example", dns_suffixes=("east.example",))
    result = verify(tmp_path, issued, leaf(issued, agent_key, name))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().endswith(": OK")


@pytest.mark.parametrize("name", OUTSIDE, ids=lambda n: n.value)
def test_a_leaf_for_another_clusters_identity_fails_openssl_verify(
    tmp_path: Path, name: x509.GeneralName
) -> None:
    issued, agent_key = intermediate(trust_domain="east.example", dns_suffixes=("east.example",))
    result = verify(tmp_path, issued, leaf(issued, agent_key, name))
    assert result.returncode != 0
    assert "permitted subtree violation" in result.stdout + result.stderr


def test_the_same_leaf_verifies_without_constraints(tmp_path: Path) -> None:
    """The refusal above is the constraints' doing, not a broken leaf."""
    issued, agent_key = intermediate()
    result = verify(tmp_path, issued, leaf(issued, agent_key, OUTSIDE[0]))
    assert result.returncode == 0, result.stdout + result.stderr


def test_pkilint_finds_no_error_in_a_constrained_intermediate(tmp_path: Path) -> None:
    issued, _ = intermediate(trust_domain="east.example", dns_suffixes=("east.example",))
    (tmp_path / "ca.pem").write_bytes(issued.certificate_pem)
    assert not_tolerated(pkilint_errors(tmp_path / "ca.pem")) == []
