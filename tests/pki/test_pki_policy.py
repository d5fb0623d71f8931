"""The issuer's CSR check: each failure is a distinct reason with a message saying what differed."""

from __future__ import annotations

import base64
from collections.abc import Callable, Sequence

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import AttributeOID, NameOID
from hypothesis import given, settings
from hypothesis import strategies as st
from pki.pki_testing import HOSTS, ORG, P256, P384, RSA2048, ed25519_key, key, rsa1024

from shared.pki import (
    MAX_PEM_BYTES,
    CsrRejected,
    InvalidHost,
    KeyAlgorithm,
    KeyPolicy,
    KeySpec,
    build_csr,
    check_csr,
    parse_hosts,
)

POLICY = KeyPolicy()


def raw_csr(
    signer: object,
    *,
    subject: Sequence[tuple[x509.ObjectIdentifier, str]] = ((NameOID.ORGANIZATION_NAME, ORG),),
    hosts: Sequence[str] | None = HOSTS,
    extensions: Sequence[x509.ExtensionType] = (),
    challenge_password: bytes | None = None,
    digest: hashes.HashAlgorithm | None = None,
) -> bytes:
    """A CSR made with bare cryptography, to craft what `build_csr` never produces."""
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(oid, value) for oid, value in subject])
    )
    if hosts is not None:
        builder = builder.add_extension(x509.SubjectAlternativeName(parse_hosts(hosts)), False)
    for extension in extensions:
        builder = builder.add_extension(extension, critical=True)
    if challenge_password is not None:
        builder = builder.add_attribute(AttributeOID.CHALLENGE_PASSWORD, challenge_password)
    is_edwards = not hasattr(signer, "curve") and not hasattr(signer, "key_size")
    algorithm = None if is_edwards else (digest or hashes.SHA256())
    csr = builder.sign(signer, algorithm)  # type: ignore[arg-type]
    return csr.public_bytes(serialization.Encoding.PEM)


def good_csr() -> bytes:
    return build_csr(key(P256), org=ORG, name="east", hosts=HOSTS)


def tampered_csr() -> bytes:
    """The good CSR with its org changed inside the signed DER: the signature no longer verifies."""
    der = x509.load_pem_x509_csr(good_csr()).public_bytes(serialization.Encoding.DER)
    assert der.count(ORG.encode()) == 1
    der = der.replace(ORG.encode(), b"evil.io")
    body = base64.encodebytes(der).replace(b"\n", b"")
    lines = [body[i : i + 64] for i in range(0, len(body), 64)]
    return (
        b"-----BEGIN CERTIFICATE REQUEST-----\n"
        + b"\n".join(lines)
        + b"\n-----END CERTIFICATE REQUEST-----\n"
    )


def test_a_csr_built_for_the_declaration_passes_and_is_returned_parsed() -> None:
    csr = check_csr(good_csr(), hosts=HOSTS, org=ORG, policy=POLICY)
    assert csr.is_signature_valid
    assert csr.subject.rfc4514_string() == f"OU=east,O={ORG}"


def test_hosts_in_another_order_still_match() -> None:
    check_csr(good_csr(), hosts=list(reversed(HOSTS)), org=ORG, policy=POLICY)


@pytest.mark.parametrize(
    "spec",
    [RSA2048, KeySpec(algorithm=KeyAlgorithm.RSA, size=3072), P256, P384],
    ids=lambda s: f"{s.algorithm.value}-{s.size}",
)
def test_every_key_type_the_agent_generates_is_allowed_by_default(spec: KeySpec) -> None:
    pem = build_csr(key(spec), org=ORG, name="east", hosts=HOSTS)
    check_csr(pem, hosts=HOSTS, org=ORG, policy=POLICY)


REJECTIONS: list[tuple[str, Callable[[], bytes], dict[str, object], str, str]] = [
    ("a csr over 64 KiB is too large", lambda: b"x" * (MAX_PEM_BYTES + 1), {}, "TooLarge", "65537"),
    ("garbage is malformed", lambda: b"hello", {}, "Malformed", "exactly one"),
    ("a truncated csr is malformed", lambda: good_csr()[:300], {}, "Malformed", "readable"),
    ("two csrs in one pem are malformed", lambda: good_csr() * 2, {}, "Malformed", "exactly one"),
    (
        "a certificate is not a csr",
        lambda: good_csr().replace(b"CERTIFICATE REQUEST", b"CERTIFICATE"),
        {},
        "Malformed",
        "exactly one",
    ),
    ("an altered csr has a bad signature", tampered_csr, {}, "BadSignature", "does not verify"),
    ("rsa 1024 is weak", lambda: raw_csr(rsa1024()), {}, "WeakKey", "1024 bits"),
    (
        "ed25519 is unsupported",
        lambda: raw_csr(ed25519_key()),
        {},
        "UnsupportedKey",
        "only RSA and ECDSA",
    ),
    (
        "p-521 is not in the default curves",
        lambda: raw_csr(ec.generate_private_key(ec.SECP521R1())),
        {},
        "UnsupportedKey",
        "secp521r1",
    ),
    (
        "a curve the policy drops is unsupported",
        lambda: raw_csr(key(P384)),
        {"policy": KeyPolicy(ecdsa_curves=frozenset({"secp256r1"}))},
        "UnsupportedKey",
        "secp384r1",
    ),
    (
        "rsa above the policy maximum is unsupported",
        lambda: raw_csr(key(KeySpec(algorithm=KeyAlgorithm.RSA, size=3072))),
        {"policy": KeyPolicy(rsa_max_bits=2048)},
        "UnsupportedKey",
        "at most 2048",
    ),
    (
        "a challenge password is an extra attribute",
        lambda: raw_csr(key(P256), challenge_password=b"secret"),
        {},
        "ExtraAttributes",
        "1.2.840.113549.1.9.7",
    ),
    (
        "a requested basicConstraints is an extra extension",
        lambda: raw_csr(key(P256), extensions=[x509.BasicConstraints(ca=True, path_length=9)]),
        {},
        "ExtraExtensions",
        "BasicConstraints",
    ),
    (
        "another org is an org mismatch",
        lambda: raw_csr(key(P256), subject=[(NameOID.ORGANIZATION_NAME, "evil.io")]),
        {},
        "OrgMismatch",
        "subject O is 'evil.io'; the declaration says 'solo.io'",
    ),
    (
        "no org is an org mismatch",
        lambda: raw_csr(key(P256), subject=[(NameOID.COMMON_NAME, "x")]),
        {},
        "OrgMismatch",
        "absent",
    ),
    (
        "two orgs are an org mismatch",
        lambda: raw_csr(
            key(P256),
            subject=[(NameOID.ORGANIZATION_NAME, ORG), (NameOID.ORGANIZATION_NAME, "evil.io")],
        ),
        {},
        "OrgMismatch",
        "evil.io",
    ),
    (
        "a missing host is a hosts mismatch naming it",
        lambda: raw_csr(key(P256), hosts=HOSTS[:2]),
        {},
        "HostsMismatch",
        "missing: IP:10.0.0.7",
    ),
    (
        "an extra host is a hosts mismatch naming it",
        lambda: raw_csr(key(P256), hosts=[*HOSTS, "evil.example"]),
        {},
        "HostsMismatch",
        "not declared: DNS:evil.example",
    ),
    (
        "no san at all is a hosts mismatch",
        lambda: raw_csr(key(P256), hosts=None),
        {},
        "HostsMismatch",
        "missing:",
    ),
    (
        "a san when none is declared is a hosts mismatch",
        good_csr,
        {"hosts": []},
        "HostsMismatch",
        "not declared:",
    ),
]


@pytest.mark.parametrize(
    ("make_csr", "overrides", "reason", "says"),
    [pytest.param(*row[1:], id=row[0]) for row in REJECTIONS],
)
def test_a_csr_failing_a_check_is_rejected_with_that_reason(
    make_csr: Callable[[], bytes], overrides: dict[str, object], reason: str, says: str
) -> None:
    arguments: dict[str, object] = {"hosts": HOSTS, "org": ORG, "policy": POLICY, **overrides}
    with pytest.raises(CsrRejected) as caught:
        check_csr(make_csr(), **arguments)  # type: ignore[arg-type]
    assert caught.value.reason == reason
    assert says in caught.value.message


def test_every_rejection_reason_in_the_table_is_distinct_per_check() -> None:
    reasons = {row[3] for row in REJECTIONS}
    assert reasons == CsrRejected.REASONS


def test_a_bad_declaration_is_an_invalid_host_not_a_rejected_csr() -> None:
    with pytest.raises(InvalidHost, match=r"hosts\[1\]: empty"):
        check_csr(good_csr(), hosts=["a.example", ""], org=ORG, policy=POLICY)


@pytest.mark.parametrize(
    "arguments",
    [
        pytest.param({"rsa_min_bits": 1024}, id="rsa below 2048 cannot be allowed"),
        pytest.param({"rsa_min_bits": 4096, "rsa_max_bits": 2048}, id="min above max"),
        pytest.param({"ecdsa_curves": frozenset({"brainpoolP256r1"})}, id="an unknown curve"),
    ],
)
def test_an_inconsistent_policy_is_a_value_error(arguments: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="KeyPolicy"):
        KeyPolicy(**arguments)  # type: ignore[arg-type]


corruptions = st.one_of(
    st.tuples(st.just("truncate"), st.integers(min_value=0, max_value=2000), st.just(0)),
    st.tuples(st.just("flip"), st.integers(min_value=0, max_value=2000), st.integers(1, 255)),
    st.tuples(st.just("insert"), st.integers(min_value=0, max_value=2000), st.integers(0, 255)),
)


def corrupt(data: bytes, corruption: tuple[str, int, int]) -> bytes:
    kind, position, value = corruption
    position %= len(data) + 1
    if kind == "truncate":
        return data[:position]
    if kind == "insert":
        return data[:position] + bytes([value]) + data[position:]
    position %= len(data)
    return data[:position] + bytes([data[position] ^ value]) + data[position + 1 :]


@settings(max_examples=50, deadline=None)
@given(corruption=corruptions)
def test_a_corrupted_csr_is_rejected_cleanly_or_is_unchanged(
    corruption: tuple[str, int, int],
) -> None:
    original = good_csr()
    corrupted = corrupt(original, corruption)
    try:
        csr = check_csr(corrupted, hosts=HOSTS, org=ORG, policy=POLICY)
    except CsrRejected:
        return  # a clean refusal; any other exception propagates and fails the test
    # Only a change PEM decoding ignores (e.g. in line breaks) may pass.
    der = x509.load_pem_x509_csr(original).public_bytes(serialization.Encoding.DER)
    assert csr.public_bytes(serialization.Encoding.DER) == der
