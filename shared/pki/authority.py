"""The signing CA: `SigningCA` and `load_signing_ca`, which reads and checks it from a Secret.

`load_signing_ca` reads the signing Secret's data in either form Istio accepts:

- ``ca-cert.pem`` + ``ca-key.pem`` + ``root-cert.pem`` (+ ``cert-chain.pem``, optional here), or
- ``tls.crt`` + ``tls.key`` + ``ca.crt`` (cert-manager's form; ``tls.crt`` may carry the chain).

It assembles the path ``[signing cert, intermediates..., root]`` in the order given (repeated
certificates dropped, the root appended if the chain stops short of it). The root field may hold
several roots (the overlap of a root rotation, docs/rotation.md): the path ends at the one that
issued the chain's top, and every root goes into `SigningCA.trust_roots`, each of them checked as
a valid self-signed CA. It refuses, with an
`InvalidSigningCA` whose ``reason`` says why: a missing field (``MissingField``), both forms at once
(``AmbiguousForm``), unreadable PEM (``Malformed``/``TooLarge``/``Encrypted``), a key that does not
belong to the certificate (``KeyMismatch``) or is not RSA >= 2048 / ECDSA P-256, P-384, P-521
(``UnsupportedKey``), a certificate that is not a CA allowed to sign (``NotCA``) or whose
pathLenConstraint leaves no room for an intermediate below it (``PathLenExhausted``), and any chain
fault from `shared.pki.chains` (``ChainBroken``, ``RootNotSelfSigned``, ``Expired``,
``NotYetValid``, ``Untrusted``). The signing CA may itself be the root or an intermediate.

A `SigningCA` also holds what every intermediate it signs shares (issuer name, basicConstraints,
keyUsage, authorityKeyIdentifier), built once, so that `sign_intermediate` adds only what differs.

Synchronous and pure; the clock is the caller's ``now``. The signing key is held in
`SigningCA.key` and appears in no repr, message or log. Deliberately not here: watching the Secret
for changes (the issuer reloads it), revocation of the signing CA, HSM/KMS-held keys.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import rsa

from shared.pki.chains import check_ca_extensions, issued_by, verify_path
from shared.pki.errors import ChainInvalid, InvalidKey, InvalidSigningCA
from shared.pki.fingerprints import fingerprint
from shared.pki.keys import PrivateKey, load_private_key, public_key_der, signature_hash
from shared.pki.pem import certificates_to_pem, describe_certificate, load_certificates, spki_of

__all__ = [
    "CA_KEY_USAGE",
    "ISTIO_FIELDS",
    "TLS_FIELDS",
    "SigningCA",
    "load_signing_ca",
    "signing_ca_expiry",
]

ISTIO_FIELDS = ("ca-cert.pem", "ca-key.pem", "cert-chain.pem", "root-cert.pem")
TLS_FIELDS = ("tls.crt", "tls.key", "ca.crt")

_SIGNER_CURVES = frozenset({"secp256r1", "secp384r1", "secp521r1"})
_MIN_SIGNER_RSA_BITS = 2048

CA_KEY_USAGE = x509.KeyUsage(
    digital_signature=True,
    content_commitment=False,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=False,
    key_cert_sign=True,
    crl_sign=True,
    encipher_only=False,
    decipher_only=False,
)


@dataclass(frozen=True, kw_only=True)
class SigningCA:
    """A CA ready to sign: its certificate, its key, and ``chain`` = ``(cert, ..., root)``.

    ``chain[0]`` is ``cert`` and ``chain[-1]`` the self-signed root; for a root signing CA the chain
    is ``(cert,)``. Build it with `load_signing_ca`, which checks all of that; the key is excluded
    from repr and equality.
    """

    cert: x509.Certificate
    key: PrivateKey = field(repr=False, compare=False)
    chain: tuple[x509.Certificate, ...]
    trust_roots: tuple[x509.Certificate, ...] = ()
    """Every root of the Secret's root field (``root-cert.pem``/``ca.crt``), in its order: the
    bundle the issued intermediates are sent with. Empty means ``(root,)``; it always holds
    ``root``. Several roots are the overlap of a root rotation (docs/rotation.md)."""
    _builders: dict[int, x509.CertificateBuilder] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        if not self.chain or self.chain[0] != self.cert:
            raise ValueError("SigningCA.chain must start with the signing certificate")
        if not self.trust_roots:
            object.__setattr__(self, "trust_roots", (self.chain[-1],))
        elif self.chain[-1] not in self.trust_roots:
            raise ValueError("SigningCA.trust_roots must hold the chain's root")

    @property
    def root(self) -> x509.Certificate:
        return self.chain[-1]

    @functools.cached_property
    def chain_pem(self) -> bytes:
        """``chain`` as concatenated PEM, signing certificate first."""
        return certificates_to_pem(self.chain)

    @functools.cached_property
    def root_pem(self) -> bytes:
        return certificates_to_pem([self.root])

    @functools.cached_property
    def trust_roots_pem(self) -> bytes:
        """``trust_roots`` as concatenated PEM: what ``root-cert.pem`` of what it signs holds."""
        return certificates_to_pem(self.trust_roots)

    @functools.cached_property
    def fingerprint(self) -> str:
        """SHA-256 of the signing certificate (DER), lowercase hex."""
        return fingerprint(self.cert)

    @functools.cached_property
    def max_path_len(self) -> int | None:
        """The largest pathLenConstraint an intermediate signed here may carry (None: unlimited).

        The certificate at ``chain[i]`` has ``i`` CAs below it before the issued intermediate, so
        its pathLenConstraint ``p`` leaves ``p - i - 1`` for the issued one.
        """
        bounds = [
            limit - position - 1
            for position, certificate in enumerate(self.chain)
            if (limit := _path_len_of(certificate)) is not None
        ]
        return min(bounds) if bounds else None

    @functools.cached_property
    def subjects(self) -> frozenset[x509.Name]:
        """Every subject of the chain: an issued subject must be none of them."""
        return frozenset(certificate.subject for certificate in self.chain)

    @functools.cached_property
    def valid_from(self) -> dt.datetime:
        """When the whole chain is valid from (the latest notBefore)."""
        return max(certificate.not_valid_before_utc for certificate in self.chain)

    @functools.cached_property
    def valid_until(self) -> dt.datetime:
        """When the first certificate of the chain expires (the earliest notAfter)."""
        return min(certificate.not_valid_after_utc for certificate in self.chain)

    @functools.cached_property
    def signature_hash(self) -> hashes.SHA256 | hashes.SHA384 | hashes.SHA512:
        return signature_hash(self.key)

    @functools.cached_property
    def authority_key_identifier(self) -> x509.AuthorityKeyIdentifier:
        # RFC 5280 4.2.1.1: the AKI of what we sign must equal our SKI, however it was computed.
        try:
            ski = self.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        except x509.ExtensionNotFound:
            return x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key())
        return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)

    def builder_for(self, *, path_len: int) -> x509.CertificateBuilder:
        """A builder holding what every intermediate signed here with ``path_len`` shares.

        Builders are immutable (each call returns a new one), so the prefix is built once per
        path length and shared, also across threads.
        """
        builder = self._builders.get(path_len)
        if builder is None:
            builder = (
                x509.CertificateBuilder()
                .issuer_name(self.cert.subject)
                .add_extension(x509.BasicConstraints(ca=True, path_length=path_len), critical=True)
                .add_extension(CA_KEY_USAGE, critical=True)
                .add_extension(self.authority_key_identifier, critical=False)
            )
            self._builders[path_len] = builder
        return builder


def load_signing_ca(data: Mapping[str, bytes], *, now: dt.datetime) -> SigningCA:
    """Read and check a signing Secret's ``data`` (values already base64-decoded)."""
    cert_field, key_field, root_field, chain_field = _form_of(data)
    certificates = _load(data, cert_field)
    extra = _load(data, chain_field) if chain_field is not None and chain_field in data else []
    roots = _load(data, root_field)
    key = _load_key(data, key_field)
    cert = certificates[0]
    if public_key_der(key) != spki_of(cert):
        raise InvalidSigningCA(
            "KeyMismatch",
            f"{key_field} does not hold the private key of {cert_field} "
            f"{describe_certificate(cert)}",
        )
    if why := check_ca_extensions(cert):
        raise InvalidSigningCA("NotCA", f"{cert_field} {describe_certificate(cert)}: {why}")
    path = _assemble(cert, [*certificates[1:], *extra], _root_of(certificates, extra, roots))
    try:
        verify_path(path, now=now)
    except ChainInvalid as exc:
        raise InvalidSigningCA(exc.reason, f"signing CA chain: {exc.message}") from None
    trust_roots = _distinct(roots)
    for other in trust_roots:
        if other != path[-1]:
            _check_other_root(other, root_field, now=now)
    ca = SigningCA(cert=cert, key=key, chain=tuple(path), trust_roots=trust_roots)
    if ca.max_path_len is not None and ca.max_path_len < 0:
        raise InvalidSigningCA(
            "PathLenExhausted",
            f"{describe_certificate(cert)}: the pathLenConstraints of its chain allow no "
            "intermediate CA below it, only end-entity certificates",
        )
    return ca


def signing_ca_expiry(data: Mapping[str, bytes]) -> tuple[dt.datetime, dt.datetime]:
    """(the signing CA certificate's notAfter, its root's) from a signing Secret's ``data``
    (base64-decoded), for metrics: reads only the certificates, never the key, checks nothing
    else (InvalidSigningCA when the certificates cannot be read)."""
    cert_field, _, root_field, _ = _form_of(data)
    cert, root = _load(data, cert_field)[0], _load(data, root_field)[0]
    return cert.not_valid_after_utc, root.not_valid_after_utc


def _form_of(data: Mapping[str, bytes]) -> tuple[str, str, str, str | None]:
    """(cert, key, root, chain) field names of the form ``data`` uses."""
    istio = any(f in data for f in ("ca-cert.pem", "ca-key.pem"))
    tls = any(f in data for f in ("tls.crt", "tls.key"))
    if istio and tls:
        raise InvalidSigningCA(
            "AmbiguousForm",
            "the Secret has both ca-cert.pem/ca-key.pem and tls.crt/tls.key; keep one form",
        )
    if tls:
        fields: tuple[str, str, str, str | None] = ("tls.crt", "tls.key", "ca.crt", None)
        required = TLS_FIELDS
    else:
        fields = ("ca-cert.pem", "ca-key.pem", "root-cert.pem", "cert-chain.pem")
        required = ("ca-cert.pem", "ca-key.pem", "root-cert.pem")
    if missing := [f for f in required if f not in data]:
        raise InvalidSigningCA(
            "MissingField",
            f"the Secret lacks {missing}; it needs {', '.join(ISTIO_FIELDS)} "
            f"(cert-chain.pem optional) or {', '.join(TLS_FIELDS)}; it has {sorted(data)}",
        )
    return fields


def _load(data: Mapping[str, bytes], field_name: str) -> list[x509.Certificate]:
    return load_certificates(data[field_name], field=field_name, error=InvalidSigningCA)


def _load_key(data: Mapping[str, bytes], field_name: str) -> PrivateKey:
    value = data[field_name]
    if not isinstance(value, bytes):
        raise InvalidSigningCA("Malformed", f"{field_name}: expected bytes")
    try:
        key = load_private_key(value)
    except InvalidKey as exc:
        raise InvalidSigningCA(exc.reason, f"{field_name}: {exc.message}") from None
    if isinstance(key, rsa.RSAPrivateKey):
        acceptable = key.key_size >= _MIN_SIGNER_RSA_BITS
    else:
        acceptable = key.curve.name in _SIGNER_CURVES
    if not acceptable:
        raise InvalidSigningCA(
            "UnsupportedKey",
            f"{field_name}: a signing key must be RSA >= {_MIN_SIGNER_RSA_BITS} bits or ECDSA "
            "P-256, P-384 or P-521",
        )
    return key


def _root_of(
    certificates: Sequence[x509.Certificate],
    extra: Sequence[x509.Certificate],
    roots: Sequence[x509.Certificate],
) -> x509.Certificate:
    """The root (of several, in a rotation's overlap) that the chain given ends at: the one whose
    subject is the issuer of the chain's last certificate; the first root if none matches (path
    validation then says why)."""
    top = [*certificates, *extra][-1]
    if top in roots:
        return top
    candidates = [root for root in roots if root.subject == top.issuer]
    for root in candidates:  # a re-keyed root may keep its predecessor's subject
        if issued_by(top, root):
            return root
    return (candidates or roots)[0]


def _check_other_root(root: x509.Certificate, root_field: str, *, now: dt.datetime) -> None:
    """A root in the bundle beside the chain's own must be a valid self-signed CA as well: it
    goes into every ``root-cert.pem`` signed here."""
    try:
        verify_path([root], now=now)
    except ChainInvalid as exc:
        raise InvalidSigningCA(exc.reason, f"{root_field}: {exc.message}") from None


def _distinct(roots: Sequence[x509.Certificate]) -> tuple[x509.Certificate, ...]:
    kept: list[x509.Certificate] = []
    for root in roots:
        if root not in kept:
            kept.append(root)
    return tuple(kept)


def _assemble(
    cert: x509.Certificate, extra: Sequence[x509.Certificate], root: x509.Certificate
) -> list[x509.Certificate]:
    """``[cert, *extra, root]`` in the order given, each certificate once."""
    path = [cert]
    for certificate in extra:
        if certificate not in path:
            path.append(certificate)
    if path[-1] != root:
        path.append(root)
    return path


def _path_len_of(certificate: x509.Certificate) -> int | None:
    try:
        return certificate.extensions.get_extension_for_class(
            x509.BasicConstraints
        ).value.path_length
    except (x509.ExtensionNotFound, ValueError):
        # Absent or undecodable: `load_signing_ca` has already refused such a chain.
        return None
