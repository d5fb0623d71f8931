"""Signing intermediates: `sign_intermediate` and its result, `IssuedCertificate`.

`sign_intermediate` signs the CSR's public key -- and nothing else from the CSR: subject and SANs
come from the declaration. Run `shared.pki.policy.check_csr` first; this function does not repeat
it. What it signs: BasicConstraints CA:TRUE with ``path_len`` (critical), KeyUsage keyCertSign +
cRLSign + digitalSignature (critical), SubjectKeyIdentifier, AuthorityKeyIdentifier (the signer's
SKI), SANs from the declared hosts, a random positive serial (cryptography's
``random_serial_number``: 159 random bits), notBefore ``now - backdate`` and notAfter
``now + ttl``, each clamped to the validity of the whole signing chain.

It refuses with `SigningRefused` when the signer (or anything above it) is expired or not yet
valid, when the requested ``path_len`` does not fit under the chain's pathLenConstraints, or when
the issued subject would equal a subject in the chain. Programming errors (a naive ``now``, a
non-positive ``ttl``, a negative ``path_len`` or ``backdate``) raise ``ValueError``.

Synchronous and pure; the clock is the caller's ``now``. Signing costs one private-key operation
(~9 ms with RSA-4096, ~0.4 ms with P-384): a service signing in bulk uses an executor.
`SigningCA`, `load_signing_ca` and `fingerprint` are re-exported here for callers that sign.

With ``constraints`` (`name_constraints(...)`: a trust domain and/or DNS suffixes), the
intermediate also carries a critical NameConstraints extension with those permitted subtrees
(RFC 5280 4.2.1.10): path validation then refuses any certificate below it whose URI host is not
the trust domain, or whose DNS names are not under a suffix (docs/pki.md).

Deliberately not here: CRLs, OCSP, excluded subtrees, the ledger.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from shared.pki.authority import SigningCA, load_signing_ca
from shared.pki.errors import SigningRefused
from shared.pki.fingerprints import fingerprint, spki_fingerprint
from shared.pki.names import parse_hosts, subject_for
from shared.pki.pem import describe_certificate, spki_of

__all__ = [
    "IssuedCertificate",
    "SigningCA",
    "fingerprint",
    "load_signing_ca",
    "name_constraints",
    "sign_intermediate",
]


def name_constraints(
    *, trust_domain: str | None = None, dns_suffixes: Sequence[str] = ()
) -> x509.NameConstraints:
    """Permitted subtrees: URIs whose host is exactly ``trust_domain`` (a SPIFFE trust domain),
    DNS names equal to or under each of ``dns_suffixes``. Excluded subtrees: none."""
    permitted: list[x509.GeneralName] = []
    if trust_domain is not None:
        permitted.append(x509.UniformResourceIdentifier(trust_domain))
    permitted.extend(x509.DNSName(suffix) for suffix in dns_suffixes)
    if not permitted:
        raise ValueError("name constraints need a trust domain or a DNS suffix")
    return x509.NameConstraints(permitted_subtrees=permitted, excluded_subtrees=None)


@dataclass(frozen=True, slots=True, kw_only=True)
class IssuedCertificate:
    """What `sign_intermediate` returns: PEMs for the wire and facts for the ledger.

    ``chain_pem`` is exactly Istio's ``cert-chain.pem``: the issued certificate followed by every
    certificate up to and including the root. Times are timezone-aware UTC, whole seconds.
    The certificate's and its public key's fingerprints are computed when asked for (about 16 us
    together), as only the issuer's ledger needs them.
    """

    certificate_pem: bytes
    chain_pem: bytes
    root_pem: bytes
    serial: int
    not_before: dt.datetime
    not_after: dt.datetime
    signing_ca_fingerprint: str
    certificate: x509.Certificate = field(repr=False, compare=False)

    @property
    def fingerprint(self) -> str:
        """SHA-256 of the issued certificate (DER), lowercase hex."""
        return fingerprint(self.certificate)

    @property
    def public_key_fingerprint(self) -> str:
        """SHA-256 of the issued public key (the CSR's), DER SubjectPublicKeyInfo, lowercase hex."""
        spki = spki_of(self.certificate)
        assert spki is not None, "only RSA and ECDSA keys are ever signed"
        return spki_fingerprint(spki)


def sign_intermediate(
    csr: x509.CertificateSigningRequest,
    ca: SigningCA,
    *,
    hosts: Sequence[str],
    org: str,
    name: str,
    ttl: dt.timedelta,
    now: dt.datetime,
    path_len: int = 0,
    backdate: dt.timedelta = dt.timedelta(minutes=5),
    constraints: x509.NameConstraints | None = None,
) -> IssuedCertificate:
    """Sign an intermediate CA for the CSR's key, as declared (``hosts``, ``org``, ``name``).

    notBefore is ``now - backdate`` (for clock skew between clusters), but never before a
    certificate of the chain; notAfter is ``now + ttl``, but never after a certificate of the chain.
    """
    _check_arguments(now=now, ttl=ttl, path_len=path_len, backdate=backdate)
    public_key = csr.public_key()
    if not isinstance(public_key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
        raise SigningRefused("UnsupportedKey", "only RSA and ECDSA keys are signed")
    subject = subject_for(org=org, name=name)
    if subject in ca.subjects:
        raise SigningRefused(
            "SubjectCollision",
            f"the subject '{subject.rfc4514_string()}' is already used by the signing chain",
        )
    _check_signer_validity(ca, now=now)
    if ca.max_path_len is not None and path_len > ca.max_path_len:
        raise SigningRefused(
            "PathLenExceeded",
            f"path_len {path_len} requested; the signing chain allows at most {ca.max_path_len}",
        )
    not_before = max((now - backdate).astimezone(dt.UTC).replace(microsecond=0), ca.valid_from)
    not_after = min((now + ttl).astimezone(dt.UTC).replace(microsecond=0), ca.valid_until)
    builder = (
        ca.builder_for(path_len=path_len)
        .subject_name(subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )
    certificate = _with_names(builder, hosts, constraints).sign(ca.key, ca.signature_hash)
    certificate_pem = certificate.public_bytes(serialization.Encoding.PEM)
    return IssuedCertificate(
        certificate_pem=certificate_pem,
        chain_pem=certificate_pem + ca.chain_pem,
        root_pem=ca.root_pem,
        serial=certificate.serial_number,
        not_before=certificate.not_valid_before_utc,
        not_after=certificate.not_valid_after_utc,
        signing_ca_fingerprint=ca.fingerprint,
        certificate=certificate,
    )


def _with_names(
    builder: x509.CertificateBuilder,
    hosts: Sequence[str],
    constraints: x509.NameConstraints | None,
) -> x509.CertificateBuilder:
    """The SANs of the declared hosts (non-critical), and the name constraints (critical)."""
    if names := parse_hosts(hosts):
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    if constraints is not None:
        builder = builder.add_extension(constraints, critical=True)
    return builder


def _check_arguments(
    *, now: dt.datetime, ttl: dt.timedelta, path_len: int, backdate: dt.timedelta
) -> None:
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    if ttl <= dt.timedelta(0):
        raise ValueError(f"ttl must be positive, got {ttl}")
    if backdate < dt.timedelta(0):
        raise ValueError(f"backdate must not be negative, got {backdate}")
    if isinstance(path_len, bool) or path_len < 0:
        raise ValueError(f"path_len must be a non-negative integer, got {path_len!r}")


def _check_signer_validity(ca: SigningCA, *, now: dt.datetime) -> None:
    if ca.valid_from <= now < ca.valid_until:
        return
    for certificate in ca.chain:
        if now >= certificate.not_valid_after_utc:
            raise SigningRefused(
                "SignerExpired",
                f"{describe_certificate(certificate)} of the signing chain expired at "
                f"{certificate.not_valid_after_utc.isoformat()}",
            )
        if now < certificate.not_valid_before_utc:
            raise SigningRefused(
                "SignerNotYetValid",
                f"{describe_certificate(certificate)} of the signing chain is not valid before "
                f"{certificate.not_valid_before_utc.isoformat()}",
            )
