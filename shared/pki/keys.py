"""Private keys: which ones we generate, and how they are written to and read from PEM.

Everything here is synchronous and pure (no I/O, no global state). Key generation is CPU-bound --
RSA-4096 takes about 0.5 s, sometimes over a second -- so services call `generate_private_key`
through ``loop.run_in_executor`` (or ``asyncio.to_thread``) to keep their event loop serving
watches, heartbeats and acks.

Errors: a bad `KeySpec` raises `InvalidKeySpec` (also a ``ValueError``); a PEM that cannot be used
raises `InvalidKey` with reason ``Malformed``, ``Encrypted``, ``TooLarge`` or ``UnsupportedKey``.
Neither message ever quotes the PEM or the error text of the parser.

Deliberately not here: encrypted PEM (keys live in Kubernetes Secrets, whose encryption at rest is
the cluster's job), Ed25519/Ed448 (Istio's plug-in CA accepts RSA and ECDSA only), storing keys.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TypeAlias

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from shared.pki.errors import InvalidKey, InvalidKeySpec

__all__ = [
    "MAX_PEM_BYTES",
    "KeyAlgorithm",
    "KeySpec",
    "PrivateKey",
    "PublicKey",
    "generate_private_key",
    "load_private_key",
    "private_key_to_pem",
    "public_key_der",
    "signature_hash",
]

PrivateKey: TypeAlias = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
PublicKey: TypeAlias = rsa.RSAPublicKey | ec.EllipticCurvePublicKey

# Any PEM input (CSR, certificate, chain, key) above this size is refused before parsing: a real
# CA chain of a few RSA-4096 certificates is under 10 KiB, so 64 KiB only stops abuse.
MAX_PEM_BYTES = 64 * 1024

# RFC 4055 / NIST SP 800-56B: 65537 is the only public exponent anyone should generate.
_RSA_PUBLIC_EXPONENT = 65537
_RSA_SIZES = frozenset({2048, 3072, 4096})
_EC_CURVES: dict[int, type[ec.EllipticCurve]] = {256: ec.SECP256R1, 384: ec.SECP384R1}


class KeyAlgorithm(enum.StrEnum):
    """The key algorithms Istio's plug-in CA accepts for its intermediate."""

    RSA = "RSA"
    ECDSA = "ECDSA"


@dataclass(frozen=True, slots=True, kw_only=True)
class KeySpec:
    """What key the agent generates for an issuance.

    ``size`` is the RSA modulus in bits (2048, 3072, 4096) or the ECDSA curve size in bits
    (256 = P-256, 384 = P-384). The default, RSA 4096, is what Gloo Mesh generates.
    """

    algorithm: KeyAlgorithm = KeyAlgorithm.RSA
    size: int = 4096

    def __post_init__(self) -> None:
        # `algorithm` may arrive as a plain string from settings; normalise it once.
        try:
            algorithm = KeyAlgorithm(self.algorithm)
        except ValueError:
            raise InvalidKeySpec(
                "UnsupportedKey", f"key algorithm {self.algorithm!r}: use RSA or ECDSA"
            ) from None
        object.__setattr__(self, "algorithm", algorithm)
        allowed = _RSA_SIZES if algorithm is KeyAlgorithm.RSA else frozenset(_EC_CURVES)
        if isinstance(self.size, bool) or self.size not in allowed:
            raise InvalidKeySpec(
                "UnsupportedKey",
                f"{algorithm.value} key size {self.size!r}: use one of {sorted(allowed)}",
            )


def generate_private_key(spec: KeySpec | None = None) -> PrivateKey:
    """A fresh private key as ``spec`` says (default RSA 4096). CPU-bound: see the module doc."""
    spec = spec or KeySpec()
    if spec.algorithm is KeyAlgorithm.RSA:
        return rsa.generate_private_key(public_exponent=_RSA_PUBLIC_EXPONENT, key_size=spec.size)
    return ec.generate_private_key(_EC_CURVES[spec.size]())


def private_key_to_pem(key: PrivateKey) -> bytes:
    """PKCS#8, unencrypted PEM (the ``BEGIN PRIVATE KEY`` header), as Istio reads ``ca-key.pem``."""
    return key.private_bytes(
        encoding=serialization.Encoding.PEM,
        format=serialization.PrivateFormat.PKCS8,
        encryption_algorithm=serialization.NoEncryption(),
    )


def load_private_key(pem: bytes) -> PrivateKey:
    """Read an unencrypted RSA or ECDSA private key from PEM (PKCS#8, PKCS#1 or SEC1).

    Raises `InvalidKey`: ``TooLarge`` above `MAX_PEM_BYTES`, ``Encrypted`` for a
    password-protected key, ``Malformed`` for anything unreadable, ``UnsupportedKey`` for other key
    types. Any RSA size and any curve is returned; whether it is acceptable is the caller's policy.
    """
    if not isinstance(pem, bytes):
        raise InvalidKey("Malformed", f"expected PEM bytes, got {type(pem).__name__}")
    if len(pem) > MAX_PEM_BYTES:
        raise InvalidKey("TooLarge", f"private key PEM is {len(pem)} bytes, over {MAX_PEM_BYTES}")
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except TypeError:
        # cryptography raises TypeError when a password is required.
        raise InvalidKey(
            "Encrypted", "private key PEM is encrypted; provide it unencrypted"
        ) from None
    except UnsupportedAlgorithm:
        raise InvalidKey("UnsupportedKey", "private key uses an unsupported algorithm") from None
    except ValueError:
        raise InvalidKey("Malformed", "not a readable PEM private key") from None
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise InvalidKey(
            "UnsupportedKey", f"private key type {type(key).__name__}: only RSA and ECDSA are used"
        )
    return key


def public_key_der(key: PublicKey | PrivateKey) -> bytes:
    """The DER SubjectPublicKeyInfo of a key (of the public half for a private key).

    Two keys match exactly when these bytes are equal; this is how certificates, CSRs and private
    keys are compared throughout the package.
    """
    public = (
        key.public_key() if isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) else key
    )
    return public.public_bytes(
        encoding=serialization.Encoding.DER,
        format=serialization.PublicFormat.SubjectPublicKeyInfo,
    )


def signature_hash(key: PrivateKey) -> hashes.SHA256 | hashes.SHA384 | hashes.SHA512:
    """The digest to sign with ``key``: SHA-256 for RSA and P-256, SHA-384 for P-384, SHA-512 for
    P-521 -- a hash as strong as the key, the pairing RFC 5480 and the CA/Browser Forum use."""
    if isinstance(key, ec.EllipticCurvePrivateKey):
        if key.curve.key_size >= 521:
            return hashes.SHA512()
        if key.curve.key_size >= 384:
            return hashes.SHA384()
    return hashes.SHA256()
