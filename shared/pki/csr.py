"""Building the CSR the agent sends for an IssuedCertificate.

The CSR's subject is ``O=<org>, OU=<IssuedCertificate name>`` (no CN) and its only requested
extension is the SubjectAlternativeName built by `parse_hosts` from the declared ``hosts``; with no
hosts there is no SAN extension. The issuer never copies anything from the CSR but its public key
(see `shared.pki.signing`), so the CSR's names only serve the issuer's check that the agent asks for
what was declared (`shared.pki.policy.check_csr`).

Synchronous and pure; signing a CSR with an RSA-4096 key takes a few milliseconds, so services may
call it directly or with key generation in an executor.

Errors: `InvalidHost` for a bad host (by index), `InvalidSubject` for a bad org or name.
Deliberately not here: checking a CSR (that is the issuer's `check_csr`), challenge passwords or
other CSR attributes.
"""

from __future__ import annotations

from collections.abc import Sequence

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from shared.pki.keys import PrivateKey, signature_hash
from shared.pki.names import parse_hosts, subject_for

__all__ = ["build_csr", "parse_hosts"]


def build_csr(key: PrivateKey, *, org: str, name: str, hosts: Sequence[str]) -> bytes:
    """A PEM CSR signed by ``key`` (proof of possession) for ``org``/``name``/``hosts``."""
    builder = x509.CertificateSigningRequestBuilder().subject_name(subject_for(org=org, name=name))
    if names := parse_hosts(hosts):
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    csr = builder.sign(key, signature_hash(key))
    return csr.public_bytes(serialization.Encoding.PEM)
