"""The issued bundle: round trips for every key type and signing-CA form, checks, corruptions."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import replace

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from hypothesis import given, settings
from hypothesis import strategies as st
from pki.pki_testing import (
    ALL_SPECS,
    DAY,
    HOSTS,
    NOW,
    ORG,
    P256,
    P384,
    RSA2048,
    ed25519_key,
    hierarchy,
    issue,
    issue_fresh,
    key,
    key_pem,
    make_ca,
    pem,
    sans,
    spec_id,
    valid_hosts,
)

from shared.pki import (
    BUNDLE_FIELDS,
    Bundle,
    BundleInvalid,
    check_bundle,
    fingerprint,
    parse_hosts,
    private_key_to_pem,
)

FORMS = ["istio", "tls"]


@pytest.mark.parametrize("levels", [1, 2], ids=["root signs", "intermediate signs"])
@pytest.mark.parametrize("form", FORMS, ids=["istio form", "tls form"])
@pytest.mark.parametrize("spec", ALL_SPECS, ids=spec_id)
def test_every_key_type_round_trips_through_both_forms_and_levels(
    spec: object, form: str, levels: int
) -> None:
    result = issue(spec=spec, form=form, levels=levels)
    info = check_bundle(result.bundle, hosts=HOSTS, org=ORG, now=NOW)
    cert = x509.load_pem_x509_certificate(result.bundle.ca_cert_pem)
    assert info.serial == cert.serial_number == result.issued.serial
    assert info.not_after == result.issued.not_after
    assert info.public_key_fingerprint == fingerprint(key(spec, 1).public_key())
    chain = x509.load_pem_x509_certificates(result.bundle.cert_chain_pem)
    assert len(chain) == levels + 1
    assert chain[0] == cert
    assert chain[-1] == x509.load_pem_x509_certificate(result.bundle.root_cert_pem)


@pytest.mark.parametrize("signer", [RSA2048, P384], ids=["RSA-2048 signer", "P-384 signer"])
def test_other_signing_key_types_round_trip(signer: object) -> None:
    result = issue(signer_spec=signer, spec=RSA2048)
    check_bundle(result.bundle, hosts=HOSTS, org=ORG, now=NOW)


def test_the_secret_data_has_istios_four_fields_and_round_trips() -> None:
    bundle = issue().bundle
    data = bundle.to_secret_data()
    assert tuple(data) == BUNDLE_FIELDS
    assert Bundle.from_secret_data({**data, "extra": b"ignored"}) == bundle
    assert "PRIVATE KEY" not in repr(bundle)
    assert "ca_key_pem" not in repr(bundle)


def test_a_naive_clock_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        check_bundle(issue().bundle, hosts=HOSTS, org=ORG, now=NOW.replace(tzinfo=None))


def test_a_secret_missing_a_field_is_refused() -> None:
    data = issue().bundle.to_secret_data()
    del data["root-cert.pem"]
    with pytest.raises(BundleInvalid) as caught:
        Bundle.from_secret_data(data)
    assert caught.value.reason == "MissingField"
    assert "root-cert.pem" in caught.value.message


@settings(max_examples=30, deadline=None)
@given(hosts=valid_hosts)
def test_random_valid_hosts_round_trip_into_exactly_those_sans(hosts: list[str]) -> None:
    result = issue_fresh(hosts=tuple(hosts))
    cert = x509.load_pem_x509_certificate(result.bundle.ca_cert_pem)
    assert sans(cert) == parse_hosts(hosts)
    assert [str(name.value) for name in sans(cert)] == hosts
    check_bundle(result.bundle, hosts=hosts, org=ORG, now=NOW)


# --- several roots (a root rotation's overlap) ------------------------------------------------


@pytest.mark.parametrize("first", [True, False], ids=["chain's root first", "chain's root last"])
def test_root_cert_pem_may_hold_several_roots_the_chain_ending_at_any(first: bool) -> None:
    bundle = _two_level()
    own = _certs(bundle.cert_chain_pem)[-1]
    other = make_ca(cn="the other root", private_key=key(P256, 9)).cert
    roots = pem(own, other) if first else pem(other, own)
    info = check_bundle(replace(bundle, root_cert_pem=roots), hosts=HOSTS, org=ORG, now=NOW)
    assert info == check_bundle(bundle, hosts=HOSTS, org=ORG, now=NOW)


# --- what the check refuses ------------------------------------------------------------------


def _two_level() -> Bundle:
    return issue(levels=2).bundle


def _certs(data: bytes) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(data)


def _with_key_cert_sign_missing_above() -> Bundle:
    """A chain whose middle CA lacks keyCertSign: links verify, RFC 5280 validation does not."""
    h = hierarchy(levels=1)
    middle = make_ca(
        cn="no certsign", private_key=key(P256, 120), parent=h.root, key_cert_sign=False
    )
    agent = key(P256, 1)
    leaf = make_ca(cn="leaf ca", private_key=agent, parent=middle)
    return _bundle_of(leaf.cert, middle.cert, h.root.cert)


def _bundle_of(leaf: x509.Certificate, *above: x509.Certificate) -> Bundle:
    return Bundle(
        ca_cert_pem=pem(leaf),
        ca_key_pem=private_key_to_pem(key(P256, 1)),
        cert_chain_pem=pem(leaf, *above),
        root_cert_pem=pem(above[-1]),
    )


def _not_a_ca() -> Bundle:
    h = hierarchy(levels=1)
    leaf = make_ca(cn="end entity", private_key=key(P256, 1), parent=h.root, ca=False)
    return _bundle_of(leaf.cert, h.root.cert)


def _root_not_self_signed() -> Bundle:
    bundle = _two_level()
    issued, intermediate, _root = _certs(bundle.cert_chain_pem)
    return replace(
        bundle, cert_chain_pem=pem(issued, intermediate), root_cert_pem=pem(intermediate)
    )


BUNDLE_FAILURES: list[tuple[str, Callable[[], Bundle], dict[str, object], str, str]] = [
    (
        "garbage in ca-cert.pem is malformed",
        lambda: replace(_two_level(), ca_cert_pem=b"garbage"),
        {},
        "Malformed",
        "ca-cert.pem",
    ),
    (
        "two certificates in ca-cert.pem are malformed",
        lambda: replace(_two_level(), ca_cert_pem=_two_level().cert_chain_pem),
        {},
        "Malformed",
        "exactly one",
    ),
    (
        "a huge chain is too large",
        lambda: replace(_two_level(), cert_chain_pem=b"x" * 70_000),
        {},
        "TooLarge",
        "cert-chain.pem",
    ),
    (
        "a truncated key is malformed",
        lambda: replace(_two_level(), ca_key_pem=_two_level().ca_key_pem[:60]),
        {},
        "Malformed",
        "ca-key.pem",
    ),
    (
        "an encrypted key is refused",
        lambda: replace(
            _two_level(),
            ca_key_pem=key(P256, 1).private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.BestAvailableEncryption(b"pw"),
            ),
        ),
        {},
        "Encrypted",
        "encrypted",
    ),
    (
        "an ed25519 key is unsupported",
        lambda: replace(_two_level(), ca_key_pem=key_pem(ed25519_key())),
        {},
        "UnsupportedKey",
        "ca-key.pem",
    ),
    (
        "another key is a key mismatch",
        lambda: replace(_two_level(), ca_key_pem=private_key_to_pem(key(P256, 2))),
        {},
        "KeyMismatch",
        "not the private key",
    ),
    (
        "a chain not starting with ca-cert.pem is out of order",
        lambda: replace(_two_level(), cert_chain_pem=pem(*_certs(_two_level().cert_chain_pem)[1:])),
        {},
        "ChainOrder",
        "must start with ca-cert.pem",
    ),
    (
        "a chain stopping short of the root does not end with root-cert.pem",
        lambda: replace(_two_level(), cert_chain_pem=pem(*_certs(_two_level().cert_chain_pem)[:2])),
        {},
        "RootMismatch",
        "must end with a root of root-cert.pem",
    ),
    (
        "another root is a root mismatch",
        lambda: replace(
            _two_level(), root_cert_pem=pem(make_ca(cn="x", private_key=key(P256, 9)).cert)
        ),
        {},
        "RootMismatch",
        "must end with a root of root-cert.pem",
    ),
    (
        "a second root that is not self-signed is refused, naming root-cert.pem",
        lambda: replace(
            _two_level(),
            root_cert_pem=pem(
                _certs(_two_level().cert_chain_pem)[-1], _certs(_two_level().cert_chain_pem)[1]
            ),
        ),
        {},
        "RootNotSelfSigned",
        "root-cert.pem",
    ),
    (
        "an expired second root is refused, naming root-cert.pem",
        lambda: replace(
            _two_level(),
            root_cert_pem=pem(
                make_ca(
                    cn="old",
                    private_key=key(P256, 9),
                    not_after=NOW - DAY,
                    not_before=NOW - 9 * DAY,
                ).cert,
                _certs(_two_level().cert_chain_pem)[-1],
            ),
        ),
        {},
        "Expired",
        "root-cert.pem",
    ),
    (
        "a chain skipping the intermediate is broken",
        lambda: replace(
            _two_level(),
            cert_chain_pem=pem(*_certs(_two_level().cert_chain_pem)[::2]),
        ),
        {},
        "ChainBroken",
        "is not issued by",
    ),
    (
        "a root that is not self-signed is refused",
        _root_not_self_signed,
        {},
        "RootNotSelfSigned",
        "self-signed",
    ),
    ("an expired bundle is expired", _two_level, {"now": NOW + 91 * DAY}, "Expired", "expired at"),
    (
        "a bundle checked before its start is not yet valid",
        _two_level,
        {"now": NOW - DAY},
        "NotYetValid",
        "not valid before",
    ),
    (
        "a middle ca without keyCertSign fails path validation",
        _with_key_cert_sign_missing_above,
        {"hosts": []},
        "Untrusted",
        "path validation failed",
    ),
    ("an end-entity certificate is not a ca", _not_a_ca, {"hosts": []}, "NotCA", "CA:FALSE"),
    ("another org is an org mismatch", _two_level, {"org": "evil.io"}, "OrgMismatch", "evil.io"),
    (
        "other hosts are a hosts mismatch",
        _two_level,
        {"hosts": [*HOSTS, "new.example"]},
        "HostsMismatch",
        "missing: DNS:new.example",
    ),
]


@pytest.mark.parametrize(
    ("make_bundle", "overrides", "reason", "says"),
    [pytest.param(*row[1:], id=row[0]) for row in BUNDLE_FAILURES],
)
def test_a_bundle_failing_a_check_is_refused_with_that_reason(
    make_bundle: Callable[[], Bundle], overrides: dict[str, object], reason: str, says: str
) -> None:
    arguments: dict[str, object] = {"hosts": HOSTS, "org": ORG, "now": NOW, **overrides}
    with pytest.raises(BundleInvalid) as caught:
        check_bundle(make_bundle(), **arguments)  # type: ignore[arg-type]
    assert caught.value.reason == reason, caught.value.message
    assert says in caught.value.message
    assert "PRIVATE KEY" not in str(caught.value)


def test_every_reason_but_missing_field_is_exercised_by_the_table() -> None:
    assert {row[3] for row in BUNDLE_FAILURES} == BundleInvalid.REASONS - {"MissingField"}


# --- random corruptions -------------------------------------------------------------------


def _swap(chain: list[x509.Certificate], i: int, j: int) -> list[x509.Certificate]:
    chain = list(chain)
    i, j = i % len(chain), j % len(chain)
    chain[i], chain[j] = chain[j], chain[i]
    return chain


def corrupt_bytes(data: bytes, kind: str, position: int, value: int) -> bytes:
    position %= len(data)
    if kind == "truncate":
        return data[:position]
    return data[:position] + bytes([data[position] ^ (value or 1)]) + data[position + 1 :]


corruption = st.one_of(
    st.tuples(
        st.just("bytes"),
        st.sampled_from(BUNDLE_FIELDS),
        st.sampled_from(["truncate", "flip"]),
        st.integers(0, 5000),
        st.integers(0, 255),
    ),
    st.tuples(st.just("swap"), st.integers(0, 2), st.integers(0, 2)),
    st.tuples(st.just("reverse")),
    st.tuples(st.just("drop"), st.integers(0, 2)),
    st.tuples(st.just("wrong key"), st.integers(2, 4)),
    st.tuples(st.just("wrong root")),
    st.tuples(st.just("signer as ca-cert")),
    st.tuples(st.just("clock"), st.integers(-10, 400)),
)


def apply(bundle: Bundle, change: tuple[object, ...]) -> tuple[Bundle, dt.datetime]:
    chain = _certs(bundle.cert_chain_pem)
    kind = change[0]
    now = NOW
    if kind == "bytes":
        _, field_name, how, position, value = change
        data = bundle.to_secret_data()
        data[field_name] = corrupt_bytes(data[field_name], how, position, value)  # type: ignore[arg-type, index]
        return Bundle.from_secret_data(data), now
    if kind == "swap":
        return replace(bundle, cert_chain_pem=pem(*_swap(chain, change[1], change[2]))), now  # type: ignore[arg-type]
    if kind == "reverse":
        return replace(bundle, cert_chain_pem=pem(*reversed(chain))), now
    if kind == "drop":
        del chain[change[1]]  # type: ignore[arg-type]
        return replace(bundle, cert_chain_pem=pem(*chain)), now
    if kind == "wrong key":
        return replace(bundle, ca_key_pem=private_key_to_pem(key(P256, change[1]))), now
    if kind == "wrong root":
        other = make_ca(cn="stranger", private_key=key(P256, 9))
        return replace(bundle, root_cert_pem=pem(other.cert)), now
    if kind == "signer as ca-cert":
        return replace(bundle, ca_cert_pem=pem(chain[1])), now
    assert kind == "clock"
    return bundle, NOW + change[1] * DAY  # type: ignore[operator]


@settings(max_examples=50, deadline=None)
@given(change=corruption)
def test_a_corrupted_bundle_is_refused_cleanly_or_is_unchanged(change: tuple[object, ...]) -> None:
    original = _two_level()
    corrupted, now = apply(original, change)
    try:
        check_bundle(corrupted, hosts=HOSTS, org=ORG, now=now)
    except BundleInvalid:
        return  # a clean refusal; any other exception propagates and fails the test
    # Whatever passed must mean the same thing as the original, checked at a valid time.
    assert _certs(corrupted.ca_cert_pem) == _certs(original.ca_cert_pem)
    assert _certs(corrupted.cert_chain_pem) == _certs(original.cert_chain_pem)
    assert _certs(corrupted.root_cert_pem) == _certs(original.root_cert_pem)
    cert = _certs(original.ca_cert_pem)[0]
    assert cert.not_valid_before_utc <= now < cert.not_valid_after_utc
    assert (
        fingerprint(key(P256, 1).public_key())
        == check_bundle(corrupted, hosts=HOSTS, org=ORG, now=now).public_key_fingerprint
    )
