"""Fingerprints: the SHA-256 names the issuer's ledger records for certificates and keys, and
the one spelling of a serial number (`serial_hex`) in status, events and the ledger.

Only public data is ever fingerprinted: a certificate (its DER) or a public key (its DER
SubjectPublicKeyInfo). Synchronous and pure; never raises for RSA or ECDSA keys.
Deliberately not here: SHA-1 "thumbprints" (the SubjectKeyIdentifier is cryptography's job).
"""

from __future__ import annotations

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from shared.pki.keys import PublicKey, public_key_der

__all__ = ["fingerprint", "serial_hex", "spki_fingerprint"]


def fingerprint(subject: x509.Certificate | PublicKey) -> str:
    """SHA-256, lowercase hex, of a DER certificate or of a public key's DER SubjectPublicKeyInfo.

    Only public data is ever fingerprinted; pass ``key.public_key()`` for a private key's.
    """
    if isinstance(subject, x509.Certificate):
        return subject.fingerprint(hashes.SHA256()).hex()
    return spki_fingerprint(public_key_der(subject))


def spki_fingerprint(spki: bytes) -> str:
    """SHA-256 of DER SubjectPublicKeyInfo bytes, lowercase hex."""
    digest = hashes.Hash(hashes.SHA256())
    digest.update(spki)
    return digest.finalize().hex()


def serial_hex(serial: int) -> str:
    """A certificate serial number as meshtrust writes it everywhere: lowercase hex, no prefix,
    no padding (`status.serialNumber`, `certificate.issued`, the ledger)."""
    return f"{serial:x}"
