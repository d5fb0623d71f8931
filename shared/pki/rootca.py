"""A self-signed root CA, for bootstrapping (`meshtrust demo`, a first installation).

What cert-manager's SelfSigned issuer gives: a root whose key is made here, returned as the
Secret data `load_signing_ca` reads (Istio's form: `ca-cert.pem`, `ca-key.pem`,
`root-cert.pem`, `cert-chain.pem`). In production the root usually lives offline and the
signing Secret holds an intermediate; this is the quick start.

Synchronous and pure (the clock is the caller's); the key is returned only inside the Secret
data and never appears in a message or repr. Deliberately not here: storing it anywhere.
"""

from __future__ import annotations

import datetime as dt

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from shared.pki.authority import CA_KEY_USAGE
from shared.pki.keys import (
    KeySpec,
    generate_private_key,
    private_key_to_pem,
    signature_hash,
)

__all__ = ["create_root_ca"]


def create_root_ca(
    *,
    org: str,
    common_name: str,
    ttl: dt.timedelta,
    now: dt.datetime,
    spec: KeySpec | None = None,
) -> dict[str, bytes]:
    """A new self-signed root (no pathLen limit), as signing-Secret data in Istio's form."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    if ttl <= dt.timedelta(0):
        raise ValueError("ttl must be positive")
    key = generate_private_key(spec or KeySpec())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, org),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )
    public_key = key.public_key()
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before((now - dt.timedelta(minutes=5)).replace(microsecond=0))
        .not_valid_after((now + ttl).replace(microsecond=0))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(CA_KEY_USAGE, critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .sign(key, signature_hash(key))
    )

    pem = certificate.public_bytes(Encoding.PEM)
    return {
        "ca-cert.pem": pem,
        "ca-key.pem": private_key_to_pem(key),
        "root-cert.pem": pem,
        "cert-chain.pem": pem,
    }
