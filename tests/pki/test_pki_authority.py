"""Loading the signing CA from a Secret: both forms, one to three levels, every refusal."""

from __future__ import annotations

import functools

import pytest
from cryptography import x509
from hypothesis import given, settings
from hypothesis import strategies as st
from pki.pki_testing import (
    DAY,
    NOW,
    P256,
    Hierarchy,
    Issuer,
    ed25519_key,
    hierarchy,
    key,
    key_pem,
    make_ca,
    pem,
)

from shared.pki import (
    InvalidSigningCA,
    fingerprint,
    load_signing_ca,
)

FORMS = ["istio", "tls"]


# --- loading -------------------------------------------------------------------------------------


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("levels", [1, 2], ids=["root signs", "intermediate signs"])
def test_both_secret_forms_load_one_and_two_level_hierarchies(form: str, levels: int) -> None:
    h = hierarchy(levels=levels)
    ca = load_signing_ca(h.secret_data(form), now=NOW)
    assert ca.cert == h.signer.cert
    assert ca.chain == (h.signer.cert, *h.above_signer)
    assert ca.root == h.root.cert
    assert ca.fingerprint == fingerprint(h.signer.cert)


def test_cert_chain_pem_is_optional_and_may_omit_the_leading_certificate() -> None:
    h = hierarchy(levels=2)
    data = h.secret_data("istio")
    assert load_signing_ca({**data, "cert-chain.pem": pem(h.root.cert)}, now=NOW).chain == (
        h.signer.cert,
        h.root.cert,
    )
    without_chain = {k: v for k, v in data.items() if k != "cert-chain.pem"}
    assert load_signing_ca(without_chain, now=NOW).chain == (h.signer.cert, h.root.cert)


def test_a_root_without_key_usage_is_accepted_as_rfc_5280_path_validation_allows() -> None:
    root = make_ca(cn="bare root", private_key=key(P256, 200), key_cert_sign=None)
    data = {"tls.crt": pem(root.cert), "tls.key": key_pem(root.key), "ca.crt": pem(root.cert)}
    assert load_signing_ca(data, now=NOW).root == root.cert


def test_the_key_is_in_no_repr() -> None:
    ca = load_signing_ca(hierarchy(levels=1).secret_data("istio"), now=NOW)
    assert "key=" not in repr(ca)
    assert "PRIVATE" not in repr(ca)


def test_a_naive_clock_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        load_signing_ca(hierarchy(levels=1).secret_data("istio"), now=NOW.replace(tzinfo=None))


def _three_level() -> Hierarchy:
    """root -> middle -> signer, as a `Hierarchy` whose 'intermediate' is the signer."""
    h = hierarchy(levels=2)
    assert h.intermediate is not None
    signer = make_ca(cn="third level", private_key=key(P256, 102), parent=h.intermediate)
    return Hierarchy(h.root, signer)


@pytest.mark.parametrize("new_first", [False, True], ids=["old root first", "new root first"])
@pytest.mark.parametrize("levels", [1, 2], ids=["root signs", "intermediate signs"])
def test_several_roots_load_as_the_bundle_and_the_chain_ends_at_the_signing_one(
    levels: int, new_first: bool
) -> None:
    h = hierarchy(levels=levels)
    other = _other_root().cert
    roots = [other, h.root.cert] if new_first else [h.root.cert, other]
    ca = load_signing_ca(_data(h, root_cert_pem=pem(*roots)), now=NOW)
    assert ca.root == h.root.cert
    assert ca.trust_roots == tuple(roots)
    assert ca.trust_roots_pem == pem(*roots)


def test_a_re_keyed_root_with_the_same_subject_is_told_apart_by_its_signature() -> None:
    h = hierarchy(levels=2)
    same_name = make_ca(cn="root", private_key=key(P256, 107)).cert
    assert same_name.subject == h.root.cert.subject
    ca = load_signing_ca(
        _data(h, root_cert_pem=pem(same_name, h.root.cert), cert_chain_pem=None), now=NOW
    )
    assert ca.root == h.root.cert
    assert ca.trust_roots == (same_name, h.root.cert)


def test_a_three_level_chain_in_order_loads() -> None:
    h = hierarchy(levels=2)
    signer = make_ca(cn="third level", private_key=key(P256, 102), parent=h.intermediate)
    assert h.intermediate is not None
    data = {
        "ca-cert.pem": pem(signer.cert),
        "ca-key.pem": key_pem(signer.key),
        "cert-chain.pem": pem(signer.cert, h.intermediate.cert, h.root.cert),
        "root-cert.pem": pem(h.root.cert),
    }
    ca = load_signing_ca(data, now=NOW)
    assert ca.chain == (signer.cert, h.intermediate.cert, h.root.cert)
    reordered = {**data, "cert-chain.pem": pem(signer.cert, h.root.cert, h.intermediate.cert)}
    with pytest.raises(InvalidSigningCA) as caught:
        load_signing_ca(reordered, now=NOW)
    assert caught.value.reason == "ChainBroken"


def _data(h: Hierarchy, **changes: bytes | None) -> dict[str, bytes]:
    data = h.secret_data("istio")
    for name, value in changes.items():
        field_name = name.replace("_", "-").replace("-pem", ".pem")
        if value is None:
            data.pop(field_name)
        else:
            data[field_name] = value
    return data


def _expired_signer() -> dict[str, bytes]:
    h = hierarchy(levels=1)
    old = make_ca(
        cn="old",
        private_key=key(P256, 103),
        parent=h.root,
        not_before=NOW - 400 * DAY,
        not_after=NOW - DAY,
    )
    return _data(h, ca_cert_pem=pem(old.cert), ca_key_pem=key_pem(old.key), cert_chain_pem=None)


def _signer_below(h: Hierarchy, **options: object) -> dict[str, bytes]:
    child = make_ca(cn="child", private_key=key(P256, 104), parent=h.root, **options)  # type: ignore[arg-type]
    return _data(h, ca_cert_pem=pem(child.cert), ca_key_pem=key_pem(child.key), cert_chain_pem=None)


def _under_constrained_root() -> dict[str, bytes]:
    root = make_ca(cn="strict root", private_key=key(P256, 110), path_len=0)
    middle = make_ca(cn="middle", private_key=key(P256, 111), parent=root)
    signer = make_ca(cn="signer", private_key=key(P256, 112), parent=middle)
    return {
        "tls.crt": pem(signer.cert, middle.cert),
        "tls.key": key_pem(signer.key),
        "ca.crt": pem(root.cert),
    }


def _other_root() -> Issuer:
    return make_ca(cn="other root", private_key=key(P256, 105))


LOAD_FAILURES = [
    ("an empty secret lacks fields", dict, "MissingField", "ca-cert.pem"),
    (
        "both forms at once are ambiguous",
        lambda: {**hierarchy(levels=1).secret_data("istio"), "tls.crt": b"x"},
        "AmbiguousForm",
        "keep one",
    ),
    (
        "no root is a missing field",
        lambda: _data(hierarchy(levels=1), root_cert_pem=None),
        "MissingField",
        "root-cert.pem",
    ),
    (
        "the tls form needs ca.crt",
        lambda: {k: v for k, v in hierarchy(levels=1).secret_data("tls").items() if k != "ca.crt"},
        "MissingField",
        "ca.crt",
    ),
    (
        "a truncated certificate is malformed",
        lambda: _data(hierarchy(levels=1), ca_cert_pem=pem(hierarchy(levels=1).root.cert)[:200]),
        "Malformed",
        "ca-cert.pem",
    ),
    (
        "a truncated key is malformed",
        lambda: _data(hierarchy(levels=1), ca_key_pem=key_pem(key(P256, 100))[:100]),
        "Malformed",
        "ca-key.pem",
    ),
    (
        "a second root that is not self-signed is refused",
        lambda: _data(
            hierarchy(levels=1),
            root_cert_pem=pem(hierarchy(levels=1).root.cert, hierarchy(levels=2).signer.cert),
        ),
        "RootNotSelfSigned",
        "root-cert.pem",
    ),
    (
        "an expired second root is refused",
        lambda: _data(
            hierarchy(levels=1),
            root_cert_pem=pem(
                hierarchy(levels=1).root.cert,
                make_ca(
                    cn="expired root",
                    private_key=key(P256, 106),
                    not_before=NOW - 400 * DAY,
                    not_after=NOW - DAY,
                ).cert,
            ),
        ),
        "Expired",
        "root-cert.pem",
    ),
    (
        "a huge field is too large",
        lambda: _data(hierarchy(levels=1), cert_chain_pem=b"x" * 70_000),
        "TooLarge",
        "cert-chain.pem",
    ),
    (
        "the wrong key is a key mismatch",
        lambda: _data(hierarchy(levels=1), ca_key_pem=key_pem(key(P256, 7))),
        "KeyMismatch",
        "ca-key.pem",
    ),
    (
        "an ed25519 signing key is unsupported",
        lambda: _data(hierarchy(levels=1), ca_key_pem=key_pem(ed25519_key())),
        "UnsupportedKey",
        "ca-key.pem",
    ),
    (
        "an expired signer is expired",
        _expired_signer,
        "Expired",
        "expired at",
    ),
    (
        "a ca:false signer is not a ca",
        lambda: _signer_below(hierarchy(levels=1), ca=False),
        "NotCA",
        "CA:FALSE",
    ),
    (
        "a signer without basic constraints is not a ca",
        lambda: _signer_below(hierarchy(levels=1), basic_constraints=False),
        "NotCA",
        "no basicConstraints",
    ),
    (
        "a signer without keyCertSign is not a ca",
        lambda: _signer_below(hierarchy(levels=1), key_cert_sign=False),
        "NotCA",
        "keyCertSign",
    ),
    (
        "a signer with pathlen 0 cannot sign an intermediate",
        lambda: _signer_below(hierarchy(levels=1), path_len=0),
        "PathLenExhausted",
        "only end-entity",
    ),
    (
        "a root with pathlen 0 leaves no room below its direct child",
        lambda: _signer_below(hierarchy(levels=1, root_path_len=0)),
        "PathLenExhausted",
        "allow no intermediate",
    ),
    (
        "a root with pathlen 0 above two levels fails rfc 5280 path validation",
        _under_constrained_root,
        "Untrusted",
        "path length",
    ),
    (
        "a root with pathlen 1 leaves no room below the signer",
        lambda: _signer_below(hierarchy(levels=1, root_path_len=1)),
        "PathLenExhausted",
        "allow no intermediate",
    ),
    (
        "a signer under another root is a broken chain",
        lambda: _data(hierarchy(levels=2), root_cert_pem=pem(_other_root().cert)),
        "ChainBroken",
        "is not issued by",
    ),
    (
        "a chain missing its intermediate is broken",
        lambda: (
            _data(hierarchy(levels=2), cert_chain_pem=None, ca_cert_pem=None)
            | {
                "ca-cert.pem": pem(_three_level().signer.cert),
                "ca-key.pem": key_pem(key(P256, 102)),
            }
        ),
        "ChainBroken",
        "is not issued by",
    ),
    (
        "a root that is not self-signed is refused",
        lambda: _data(
            hierarchy(levels=2),
            root_cert_pem=pem(hierarchy(levels=2).signer.cert),
            cert_chain_pem=None,
            ca_cert_pem=pem(_three_level().signer.cert),
            ca_key_pem=key_pem(key(P256, 102)),
        ),
        "RootNotSelfSigned",
        "not a self-signed root",
    ),
]


@pytest.mark.parametrize(
    ("make_data", "reason", "says"), [pytest.param(*row[1:], id=row[0]) for row in LOAD_FAILURES]
)
def test_an_unusable_signing_secret_is_refused_with_its_reason(make_data, reason, says) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InvalidSigningCA) as caught:
        load_signing_ca(make_data(), now=NOW)
    assert caught.value.reason == reason, caught.value.message
    assert says in caught.value.message
    assert "PRIVATE KEY" not in str(caught.value)


def test_a_signer_not_yet_valid_is_refused() -> None:
    data = hierarchy(levels=1).secret_data("istio")
    with pytest.raises(InvalidSigningCA) as caught:
        load_signing_ca(data, now=NOW - 60 * DAY)
    assert caught.value.reason == "NotYetValid"


# --- random corruptions of the signing Secret --------------------------------------------------


@functools.cache
def _three_level_secret() -> tuple[dict[str, bytes], tuple[x509.Certificate, ...], bytes]:
    """root -> middle -> signer in Istio form, the chain, and a CA:FALSE twin of the signer."""
    h = _three_level()
    middle = hierarchy(levels=2).signer
    chain = (h.signer.cert, middle.cert, h.root.cert)
    data = {
        "ca-cert.pem": pem(h.signer.cert),
        "ca-key.pem": key_pem(h.signer.key),
        "cert-chain.pem": pem(*chain),
        "root-cert.pem": pem(h.root.cert),
    }
    not_ca = make_ca(cn="third level", private_key=h.signer.key, parent=middle, ca=False)
    return data, chain, pem(not_ca.cert)


signing_corruptions = st.one_of(
    st.tuples(
        st.just("bytes"),
        st.sampled_from(["ca-cert.pem", "ca-key.pem", "cert-chain.pem", "root-cert.pem"]),
        st.sampled_from(["truncate", "flip"]),
        st.integers(0, 5000),
        st.integers(1, 255),
    ),
    st.tuples(st.just("order"), st.permutations([0, 1, 2])),
    st.tuples(st.just("subset"), st.lists(st.integers(0, 2), max_size=4)),
    st.tuples(st.just("wrong key"), st.integers(2, 5)),
    st.tuples(st.just("not a ca")),
    st.tuples(st.just("clock"), st.integers(-60, 800)),
)


@settings(max_examples=50, deadline=None)
@given(change=signing_corruptions)
def test_a_corrupted_signing_secret_is_refused_cleanly_or_is_unchanged(
    change: tuple[object, ...],
) -> None:
    data, chain, not_ca_pem = _three_level_secret()
    data = dict(data)
    now = NOW
    kind = change[0]
    if kind == "bytes":
        _, field_name, how, position, value = change
        blob = data[field_name]  # type: ignore[index]
        position = position % len(blob)  # type: ignore[operator]
        data[field_name] = (  # type: ignore[index]
            blob[:position]
            if how == "truncate"
            else blob[:position] + bytes([blob[position] ^ value]) + blob[position + 1 :]  # type: ignore[operator]
        )
    elif kind == "order":
        data["cert-chain.pem"] = pem(*(chain[i] for i in change[1]))  # type: ignore[attr-defined]
    elif kind == "subset":
        data["cert-chain.pem"] = pem(*(chain[i] for i in change[1]))  # type: ignore[attr-defined]
        if not change[1]:
            del data["cert-chain.pem"]
    elif kind == "wrong key":
        data["ca-key.pem"] = key_pem(key(P256, change[1]))
    elif kind == "not a ca":
        data["ca-cert.pem"] = not_ca_pem
    else:
        now = NOW + change[1] * DAY  # type: ignore[operator]
    try:
        ca = load_signing_ca(data, now=now)
    except InvalidSigningCA:
        return  # a clean refusal; any other exception propagates and fails the test
    # What loads is the one valid reading of the Secret, at a time all of it is valid.
    assert ca.chain == chain
    assert all(c.not_valid_before_utc <= now < c.not_valid_after_utc for c in chain)
