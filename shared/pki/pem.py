"""Reading and writing PEM certificates, with the size limit applied before any parsing.

Errors are raised through the ``error`` factory the caller passes, so that a signing Secret and an
issued bundle each report in their own error type (both accept the reasons ``TooLarge`` and
``Malformed``). Messages name the Secret field, never quote its content.

Deliberately not here: DER input, PKCS#7 bundles, fetching certificates from anywhere.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization

from shared.pki.errors import PkiError
from shared.pki.keys import MAX_PEM_BYTES

__all__ = [
    "DECODING_ERRORS",
    "ErrorFactory",
    "certificates_to_pem",
    "describe_certificate",
    "load_certificates",
    "spki_of",
]

ErrorFactory = Callable[[str, str], PkiError]

# What decoding a damaged certificate or CSR raises. cryptography *warns* (UserWarning) about some
# out-of-bounds name attributes; where warnings are errors (our tests) the warning is raised, and is
# then a malformed input like any other. `warnings.catch_warnings` is not used: it is not
# thread-safe, and these functions run in executor threads.
DECODING_ERRORS = (
    ValueError,
    UserWarning,
    x509.InvalidVersion,
    x509.DuplicateExtension,
    x509.UnsupportedGeneralNameType,
)


def load_certificates(pem: bytes, *, field: str, error: ErrorFactory) -> list[x509.Certificate]:
    """Every certificate of a PEM file, in order; at least one, else ``error("Malformed", ...)``."""
    if not isinstance(pem, bytes):
        raise error("Malformed", f"{field}: expected bytes, got {type(pem).__name__}")
    if len(pem) > MAX_PEM_BYTES:
        raise error("TooLarge", f"{field}: {len(pem)} bytes, over the {MAX_PEM_BYTES} byte limit")
    try:
        certificates = x509.load_pem_x509_certificates(pem)
    except DECODING_ERRORS:
        raise error("Malformed", f"{field}: not one or more PEM certificates") from None
    for position, certificate in enumerate(certificates):
        # cryptography decodes names and extensions lazily; decode them now, so that a damaged
        # certificate is refused here rather than raising from deep inside a later check.
        try:
            _ = certificate.subject, certificate.issuer, certificate.extensions
        except DECODING_ERRORS:
            raise error(
                "Malformed", f"{field}: certificate {position} has undecodable names or extensions"
            ) from None
    return certificates


def certificates_to_pem(certificates: Iterable[x509.Certificate]) -> bytes:
    """Concatenated PEM, in the order given."""
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certificates)


def describe_certificate(certificate: x509.Certificate) -> str:
    """How messages name a certificate: its subject (RFC 4514) and serial in hex."""
    try:
        subject = certificate.subject.rfc4514_string()
    except DECODING_ERRORS:
        subject = "<undecodable subject>"
    return f"'{subject}' (serial {certificate.serial_number:#x})"


def spki_of(certificate: x509.Certificate) -> bytes | None:
    """The DER SubjectPublicKeyInfo of a certificate; ``None`` if its key cannot be read."""
    try:
        return certificate.public_key().public_bytes(
            encoding=serialization.Encoding.DER,
            format=serialization.PublicFormat.SubjectPublicKeyInfo,
        )
    except (ValueError, UnsupportedAlgorithm):
        return None
