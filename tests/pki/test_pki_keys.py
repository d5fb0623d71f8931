"""Keys: which specs exist, generation, and the PEM round trip."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from pki.pki_testing import ALL_SPECS, P256, ed25519_key, key, key_pem, spec_id

from shared.pki import (
    MAX_PEM_BYTES,
    InvalidKey,
    InvalidKeySpec,
    KeyAlgorithm,
    KeySpec,
    PkiError,
    generate_private_key,
    load_private_key,
    private_key_to_pem,
)


def test_default_spec_is_rsa_4096_as_gloo_mesh() -> None:
    assert KeySpec() == KeySpec(algorithm=KeyAlgorithm.RSA, size=4096)


def test_algorithm_given_as_a_string_is_normalised() -> None:
    spec = KeySpec(algorithm="ECDSA", size=384)  # type: ignore[arg-type]
    assert spec.algorithm is KeyAlgorithm.ECDSA


@pytest.mark.parametrize(
    ("algorithm", "size"),
    [
        pytest.param("RSA", 1024, id="rsa 1024 is too small"),
        pytest.param("RSA", 8192, id="rsa 8192 is not generated"),
        pytest.param("RSA", 256, id="a curve size is not an rsa size"),
        pytest.param("ECDSA", 521, id="p-521 is not accepted by istio"),
        pytest.param("ECDSA", 2048, id="an rsa size is not a curve"),
        pytest.param("ECDSA", True, id="a boolean is not a size"),
        pytest.param("Ed25519", 256, id="ed25519 is not an algorithm we generate"),
    ],
)
def test_unsupported_spec_is_a_value_error_naming_what_is_allowed(
    algorithm: str, size: int
) -> None:
    with pytest.raises(InvalidKeySpec) as caught:
        KeySpec(algorithm=algorithm, size=size)  # type: ignore[arg-type]
    assert isinstance(caught.value, ValueError)
    assert caught.value.reason == "UnsupportedKey"
    assert "use" in caught.value.message


@pytest.mark.parametrize("spec", ALL_SPECS, ids=spec_id)
def test_generated_key_has_the_requested_type_and_round_trips_through_pkcs8_pem(
    spec: KeySpec,
) -> None:
    private_key = key(spec)
    if spec.algorithm is KeyAlgorithm.RSA:
        assert isinstance(private_key, rsa.RSAPrivateKey)
        assert private_key.key_size == spec.size
        assert private_key.public_key().public_numbers().e == 65537
    else:
        assert isinstance(private_key, ec.EllipticCurvePrivateKey)
        assert private_key.curve.key_size == spec.size
    pem = private_key_to_pem(private_key)
    assert pem.startswith(b"-----BEGIN " + b"PRIVATE KEY-----\n")  # split: no header in the tree
    loaded = load_private_key(pem)
    assert loaded.private_numbers() == private_key.private_numbers()


def test_two_generated_keys_differ() -> None:
    assert private_key_to_pem(generate_private_key(P256)) != private_key_to_pem(
        generate_private_key(P256)
    )


def test_pkcs1_and_sec1_pem_are_read_too() -> None:
    rsa_key = key(ALL_SPECS[0])
    traditional = rsa_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    assert traditional.startswith(b"-----BEGIN RSA " + b"PRIVATE KEY-----")
    assert isinstance(load_private_key(traditional), rsa.RSAPrivateKey)


def _encrypted() -> bytes:
    return key(P256).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"hunter2"),
    )


@pytest.mark.parametrize(
    ("make_pem", "reason"),
    [
        pytest.param(lambda: b"", "Malformed", id="empty input is malformed"),
        pytest.param(
            lambda: private_key_to_pem(key(P256)).decode(), "Malformed", id="a str is not bytes"
        ),
        pytest.param(lambda: b"not a key", "Malformed", id="garbage is malformed"),
        pytest.param(
            lambda: private_key_to_pem(key(P256))[:-40],
            "Malformed",
            id="truncated pem is malformed",
        ),
        pytest.param(_encrypted, "Encrypted", id="an encrypted key is refused as encrypted"),
        pytest.param(
            lambda: key_pem(ed25519_key()), "UnsupportedKey", id="ed25519 is an unsupported key"
        ),
        pytest.param(
            lambda: b"A" * (MAX_PEM_BYTES + 1), "TooLarge", id="input over 64 KiB is too large"
        ),
    ],
)
def test_unusable_key_pem_gives_a_reason_and_never_echoes_the_input(make_pem, reason) -> None:  # type: ignore[no-untyped-def]
    data = make_pem()
    with pytest.raises(InvalidKey) as caught:
        load_private_key(data)
    error = caught.value
    assert error.reason == reason
    assert isinstance(error, PkiError)
    # The message and repr carry no PEM material, and nothing from the parser is chained.
    for text in (str(error), repr(error)):
        assert "PRIVATE KEY" not in text
        assert "MII" not in text
    assert error.__cause__ is None
    assert error.__context__ is None or error.__suppress_context__
