"""Test CAs built with bare `cryptography`, independent of the code under test.

Nothing here is imported by `shared.pki`; CAs and keys are made at test time and never written to
the repository. Keys are cached per process (`key`), so RSA generation is paid once.
"""

from __future__ import annotations

import datetime as dt
import functools
import ipaddress
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID
from hypothesis import strategies as st

from shared.pki import (
    Bundle,
    IssuedCertificate,
    KeyAlgorithm,
    KeyPolicy,
    KeySpec,
    PrivateKey,
    build_csr,
    check_csr,
    generate_private_key,
    load_signing_ca,
    make_bundle,
    private_key_to_pem,
    sign_intermediate,
)
from shared.pki.authority import CA_KEY_USAGE

NOW = dt.datetime(2026, 6, 1, 12, 0, 0, tzinfo=dt.UTC)
DAY = dt.timedelta(days=1)
ORG = "solo.io"
NAME = "istio-cacerts"
HOSTS = ("spiffe://cluster.local/ns/istio-system/sa/citadel", "istiod.istio-system.svc", "10.0.0.7")

ALL_SPECS = (
    KeySpec(algorithm=KeyAlgorithm.RSA, size=2048),
    KeySpec(algorithm=KeyAlgorithm.RSA, size=3072),
    KeySpec(algorithm=KeyAlgorithm.RSA, size=4096),
    KeySpec(algorithm=KeyAlgorithm.ECDSA, size=256),
    KeySpec(algorithm=KeyAlgorithm.ECDSA, size=384),
)
P256 = KeySpec(algorithm=KeyAlgorithm.ECDSA, size=256)
P384 = KeySpec(algorithm=KeyAlgorithm.ECDSA, size=384)
RSA2048 = KeySpec(algorithm=KeyAlgorithm.RSA, size=2048)


def spec_id(spec: KeySpec) -> str:
    return f"{spec.algorithm.value}-{spec.size}"


@functools.cache
def key(spec: KeySpec, slot: int = 0) -> PrivateKey:
    """A key per (spec, slot), generated once per test process."""
    del slot  # only part of the cache key: distinct slots give distinct keys
    return generate_private_key(spec)


@functools.cache
def rsa1024() -> rsa.RSAPrivateKey:
    # Deliberately weak: what the WeakKey rejection is tested with.
    return rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505


@functools.cache
def ed25519_key() -> ed25519.Ed25519PrivateKey:
    return ed25519.Ed25519PrivateKey.generate()


def pem(*certificates: x509.Certificate) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certificates)


def key_pem(private_key: PrivateKey | ed25519.Ed25519PrivateKey) -> bytes:
    return private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


_SIGNATURE_ONLY = x509.KeyUsage(
    digital_signature=True,
    **dict.fromkeys(
        (
            "content_commitment",
            "key_encipherment",
            "data_encipherment",
            "key_agreement",
            "key_cert_sign",
            "crl_sign",
            "encipher_only",
            "decipher_only",
        ),
        False,
    ),
)
"""The key usage of a certificate that claims a CA but may not sign certificates (a test of
the signer checks): `CA_KEY_USAGE` without keyCertSign and cRLSign."""


@dataclass(frozen=True)
class Issuer:
    cert: x509.Certificate
    key: PrivateKey


def make_ca(
    *,
    cn: str,
    private_key: PrivateKey,
    parent: Issuer | None = None,
    not_before: dt.datetime = NOW - 30 * DAY,
    not_after: dt.datetime = NOW + 365 * DAY,
    ca: bool = True,
    path_len: int | None = None,
    key_cert_sign: bool | None = True,
    basic_constraints: bool = True,
) -> Issuer:
    """A CA certificate (self-signed without ``parent``). ``key_cert_sign=None``: no keyUsage."""
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "meshtrust tests"),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )
    signer_key = parent.key if parent else private_key
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(parent.cert.subject if parent else subject)
        .public_key(private_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(private_key.public_key()), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(signer_key.public_key()), False
        )
    )
    if basic_constraints:
        builder = builder.add_extension(x509.BasicConstraints(ca=ca, path_length=path_len), True)
    if key_cert_sign is not None:
        builder = builder.add_extension(
            CA_KEY_USAGE if key_cert_sign else _SIGNATURE_ONLY,
            True,
        )
    return Issuer(builder.sign(signer_key, hashes.SHA256()), private_key)


@dataclass(frozen=True)
class Hierarchy:
    """A root, and optionally one intermediate below it that is the signing CA."""

    root: Issuer
    intermediate: Issuer | None

    @property
    def signer(self) -> Issuer:
        return self.intermediate or self.root

    @property
    def above_signer(self) -> list[x509.Certificate]:
        """The certificates above the signer, up to and including the root."""
        return [self.root.cert] if self.intermediate else []

    def secret_data(self, form: str) -> dict[str, bytes]:
        """The signing Secret's data, in Istio's (``istio``) or cert-manager's (``tls``) form."""
        signer = self.signer
        if form == "istio":
            return {
                "ca-cert.pem": pem(signer.cert),
                "ca-key.pem": key_pem(signer.key),
                "cert-chain.pem": pem(signer.cert, *self.above_signer),
                "root-cert.pem": pem(self.root.cert),
            }
        assert form == "tls"
        return {
            "tls.crt": pem(signer.cert, *([self.root.cert] if self.intermediate else [])),
            "tls.key": key_pem(signer.key),
            "ca.crt": pem(self.root.cert),
        }


@functools.cache
def hierarchy(*, levels: int, spec: KeySpec = P256, root_path_len: int | None = None) -> Hierarchy:
    """``levels=1``: the root signs; ``levels=2``: root -> intermediate, which signs."""
    root = make_ca(cn="root", private_key=key(spec, 100), path_len=root_path_len)
    if levels == 1:
        return Hierarchy(root, None)
    intermediate = make_ca(cn="provided intermediate", private_key=key(spec, 101), parent=root)
    return Hierarchy(root, intermediate)


def sans(certificate: x509.Certificate | x509.CertificateSigningRequest) -> list[x509.GeneralName]:
    try:
        return list(
            certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        )
    except x509.ExtensionNotFound:
        return []


def ec_key(curve: ec.EllipticCurve) -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(curve)


# --- Hypothesis strategies for valid declared hosts -------------------------------------------

_label = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,14}[a-z0-9])?", fullmatch=True)


# RFC 1123: the last label is not all digits (which also keeps every name from looking like an IP).
dns_names = (
    st.lists(_label, min_size=1, max_size=4)
    .filter(lambda labels: not labels[-1].isdigit())
    .map(".".join)
)
ip_hosts = st.ip_addresses().map(str)
_segment = st.from_regex(r"[A-Za-z0-9._-]{1,12}", fullmatch=True).filter(
    lambda s: s not in {".", ".."}
)
spiffe_ids = st.builds(
    lambda trust_domain, path: "spiffe://" + trust_domain + "".join("/" + p for p in path),
    st.from_regex(r"[a-z0-9._-]{1,20}", fullmatch=True),
    st.lists(_segment, max_size=4),
)
https_uris = st.builds(lambda host, path: f"https://{host}/{path}", dns_names, _segment)


def _canonical(host: str) -> object:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return host


valid_hosts = st.lists(
    st.one_of(dns_names, ip_hosts, spiffe_ids, https_uris), max_size=8, unique_by=_canonical
)


# --- issuing bundles end to end, through the code under test --------------------------------


@dataclass(frozen=True)
class Issued:
    bundle: Bundle
    issued: IssuedCertificate
    hosts: tuple[str, ...]


def issue_fresh(
    *,
    spec: KeySpec = P256,
    form: str = "istio",
    levels: int = 2,
    hosts: tuple[str, ...] = HOSTS,
    signer_spec: KeySpec = P256,
) -> Issued:
    """The agent's and the issuer's whole path: key, CSR, check, sign, bundle."""
    agent_key = key(spec, 1)
    csr_pem = build_csr(agent_key, org=ORG, name=NAME, hosts=hosts)
    csr = check_csr(csr_pem, hosts=hosts, org=ORG, policy=KeyPolicy())
    ca = load_signing_ca(hierarchy(levels=levels, spec=signer_spec).secret_data(form), now=NOW)
    issued = sign_intermediate(csr, ca, hosts=hosts, org=ORG, name=NAME, ttl=90 * DAY, now=NOW)
    return Issued(make_bundle(issued, private_key_to_pem(agent_key)), issued, hosts)


# The same, cached per process: most tests only read the result.
issue = functools.cache(issue_fresh)
