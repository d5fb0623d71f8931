"""Signing intermediates: the certificate profile, validity, serials, refusals."""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import NameOID
from pki.pki_testing import (
    DAY,
    HOSTS,
    NAME,
    NOW,
    ORG,
    P256,
    P384,
    RSA2048,
    Hierarchy,
    hierarchy,
    key,
    key_pem,
    make_ca,
    pem,
    sans,
)

from shared.pki import (
    KeyPolicy,
    KeySpec,
    SigningCA,
    SigningRefused,
    build_csr,
    check_csr,
    fingerprint,
    load_signing_ca,
    parse_hosts,
    sign_intermediate,
)

TTL = 90 * DAY


def csr_for(hosts: tuple[str, ...] | list[str] = HOSTS) -> x509.CertificateSigningRequest:
    pem_csr = build_csr(key(P256, 1), org=ORG, name=NAME, hosts=hosts)
    return check_csr(pem_csr, hosts=hosts, org=ORG, policy=KeyPolicy())


def sign(ca: SigningCA, **overrides: object) -> x509.Certificate:
    arguments: dict[str, object] = {
        "hosts": HOSTS,
        "org": ORG,
        "name": NAME,
        "ttl": TTL,
        "now": NOW,
        **overrides,
    }
    issued = sign_intermediate(csr_for(), ca, **arguments)  # type: ignore[arg-type]
    return x509.load_pem_x509_certificate(issued.certificate_pem)


@pytest.fixture(scope="module")
def ca() -> SigningCA:
    return load_signing_ca(hierarchy(levels=2).secret_data("istio"), now=NOW)


def test_the_issued_certificate_is_an_intermediate_ca_as_declared(ca: SigningCA) -> None:
    cert = sign(ca)
    constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical
    assert constraints.value.ca
    assert constraints.value.path_length == 0
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage)
    assert usage.critical
    assert usage.value.key_cert_sign
    assert usage.value.crl_sign
    assert usage.value.digital_signature
    assert not usage.value.key_encipherment
    ski = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert ski == x509.SubjectKeyIdentifier.from_public_key(key(P256, 1).public_key())
    aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    signer_ski = ca.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == signer_ski.digest
    assert sans(cert) == parse_hosts(HOSTS)
    assert cert.subject.rfc4514_string() == f"OU={NAME},O={ORG}"
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME) == []
    assert cert.issuer == ca.cert.subject
    assert {e.oid for e in cert.extensions} == {
        x509.BasicConstraints.oid,
        x509.KeyUsage.oid,
        x509.SubjectKeyIdentifier.oid,
        x509.AuthorityKeyIdentifier.oid,
        x509.SubjectAlternativeName.oid,
    }
    cert.verify_directly_issued_by(ca.cert)


def test_sans_come_from_the_declared_hosts_never_from_the_csr(ca: SigningCA) -> None:
    csr = x509.load_pem_x509_csr(
        build_csr(key(P256, 1), org=ORG, name=NAME, hosts=["evil.example"])
    )
    issued = sign_intermediate(
        csr, ca, hosts=["good.example"], org=ORG, name=NAME, ttl=TTL, now=NOW
    )
    cert = x509.load_pem_x509_certificate(issued.certificate_pem)
    assert sans(cert) == [x509.DNSName("good.example")]


def test_no_hosts_give_no_san_extension(ca: SigningCA) -> None:
    cert = sign(ca, hosts=[])
    with pytest.raises(x509.ExtensionNotFound):
        cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)


def test_path_len_is_configurable(ca: SigningCA) -> None:
    root_ca = load_signing_ca(hierarchy(levels=1).secret_data("istio"), now=NOW)
    cert = sign(root_ca, path_len=3)
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.path_length == 3


def test_a_path_len_the_chain_cannot_hold_is_refused() -> None:
    h = hierarchy(levels=1)
    signer = make_ca(cn="limited", private_key=key(P256, 104), parent=h.root, path_len=2)
    limited = load_signing_ca(
        {"tls.crt": pem(signer.cert), "tls.key": key_pem(signer.key), "ca.crt": pem(h.root.cert)},
        now=NOW,
    )
    assert limited.max_path_len == 1
    sign(limited, path_len=1)
    with pytest.raises(SigningRefused) as caught:
        sign(limited, path_len=2)
    assert caught.value.reason == "PathLenExceeded"
    assert "at most 1" in caught.value.message


def test_serials_are_random_positive_and_at_least_64_bits(ca: SigningCA) -> None:
    serials = [sign(ca).serial_number for _ in range(20)]
    assert len(set(serials)) == len(serials)
    assert all(serial > 0 for serial in serials)
    assert all(serial.bit_length() > 64 for serial in serials)
    assert all(serial.bit_length() <= 159 for serial in serials)  # fits 20 DER bytes


def test_validity_is_backdated_and_lasts_the_ttl(ca: SigningCA) -> None:
    issued = sign_intermediate(csr_for(), ca, hosts=HOSTS, org=ORG, name=NAME, ttl=TTL, now=NOW)
    assert issued.not_before == NOW - dt.timedelta(minutes=5)
    assert issued.not_after == NOW + TTL
    cert = x509.load_pem_x509_certificate(issued.certificate_pem)
    assert cert.not_valid_before_utc == issued.not_before
    assert cert.not_valid_after_utc == issued.not_after
    custom = sign(ca, backdate=dt.timedelta(hours=1))
    assert custom.not_valid_before_utc == NOW - dt.timedelta(hours=1)


def test_an_issued_certificate_never_outlives_its_signer(ca: SigningCA) -> None:
    cert = sign(ca, ttl=10_000 * DAY)
    assert cert.not_valid_after_utc == ca.cert.not_valid_after_utc


def test_backdating_never_starts_before_the_signer() -> None:
    h = hierarchy(levels=1)
    young = make_ca(
        cn="young",
        private_key=key(P256, 106),
        parent=h.root,
        not_before=NOW - dt.timedelta(minutes=1),
    )
    ca = load_signing_ca(
        {"tls.crt": pem(young.cert), "tls.key": key_pem(young.key), "ca.crt": pem(h.root.cert)},
        now=NOW,
    )
    assert sign(ca).not_valid_before_utc == young.cert.not_valid_before_utc


def test_the_result_carries_the_chain_up_to_the_root_and_ledger_fingerprints(
    ca: SigningCA,
) -> None:
    issued = sign_intermediate(csr_for(), ca, hosts=HOSTS, org=ORG, name=NAME, ttl=TTL, now=NOW)
    chain = x509.load_pem_x509_certificates(issued.chain_pem)
    cert = x509.load_pem_x509_certificate(issued.certificate_pem)
    assert chain == [cert, *ca.chain]
    assert x509.load_pem_x509_certificates(issued.root_pem) == [ca.root]
    assert issued.serial == cert.serial_number
    assert issued.fingerprint == fingerprint(cert)
    assert issued.public_key_fingerprint == fingerprint(key(P256, 1).public_key())
    assert issued.signing_ca_fingerprint == fingerprint(ca.cert)
    assert len(issued.fingerprint) == 64
    assert int(issued.fingerprint, 16) >= 0


@pytest.mark.parametrize(
    ("now", "reason"),
    [
        pytest.param(NOW + 400 * DAY, "SignerExpired", id="a signer expired since loading"),
        pytest.param(NOW - 60 * DAY, "SignerNotYetValid", id="a clock before the signer"),
    ],
)
def test_signing_outside_the_signers_validity_is_refused(
    ca: SigningCA, now: dt.datetime, reason: str
) -> None:
    with pytest.raises(SigningRefused) as caught:
        sign(ca, now=now)
    assert caught.value.reason == reason


def test_an_issued_subject_equal_to_a_chain_subject_is_refused() -> None:
    # A signer whose subject is exactly what we would issue (O=org, OU=name) under it.
    ca = _ca_with_subject(hierarchy(levels=1), org=ORG, unit=NAME)
    with pytest.raises(SigningRefused) as caught:
        sign(ca)
    assert caught.value.reason == "SubjectCollision"
    assert f"OU={NAME},O={ORG}" in caught.value.message


def _ca_with_subject(h: Hierarchy, *, org: str, unit: str) -> SigningCA:
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, org),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, unit),
        ]
    )
    signer_key = key(P256, 109)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(h.root.cert.subject)
        .public_key(signer_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - DAY)
        .not_valid_after(NOW + 100 * DAY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(h.root.key, hashes.SHA256())
    )
    return load_signing_ca(
        {"tls.crt": pem(cert), "tls.key": key_pem(signer_key), "ca.crt": pem(h.root.cert)},
        now=NOW,
    )


@pytest.mark.parametrize(
    "overrides",
    [
        pytest.param({"now": NOW.replace(tzinfo=None)}, id="a naive clock"),
        pytest.param({"ttl": dt.timedelta(0)}, id="a zero ttl"),
        pytest.param({"path_len": -1}, id="a negative path length"),
        pytest.param({"backdate": dt.timedelta(minutes=-1)}, id="a negative backdate"),
    ],
)
def test_programming_errors_are_value_errors(ca: SigningCA, overrides: dict[str, object]) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - the message varies; the type is the contract
        sign(ca, **overrides)


@pytest.mark.parametrize(
    "signer_spec", [RSA2048, P256, P384], ids=["RSA-2048 signer", "P-256 signer", "P-384 signer"]
)
def test_the_signature_hash_matches_the_signing_key(signer_spec: KeySpec) -> None:
    h = hierarchy(levels=1, spec=signer_spec)
    ca = load_signing_ca(h.secret_data("tls"), now=NOW)
    cert = sign(ca)
    expected = {RSA2048: "sha256", P256: "sha256", P384: "sha384"}[signer_spec]
    assert cert.signature_hash_algorithm is not None
    assert cert.signature_hash_algorithm.name == expected
    cert.verify_directly_issued_by(ca.cert)
