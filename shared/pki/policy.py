"""The issuer's check of a CSR before signing it: `KeyPolicy` and `check_csr`.

`check_csr` runs, in this order, and stops at the first failure with a `CsrRejected` whose
``reason`` is stable and whose message says what differed:

====================  ==============================================================================
``TooLarge``          the PEM is over 64 KiB (refused before parsing)
``Malformed``         not exactly one PEM CERTIFICATE REQUEST, or undecodable extensions
``BadSignature``      the CSR's signature does not verify with its own key (no proof of possession)
``UnsupportedKey``    a key type the policy does not allow (Ed25519, DSA, an unlisted curve, RSA
                      above the maximum)
``WeakKey``           RSA below the policy's minimum
``ExtraAttributes``   CSR attributes other than the extension request (e.g. challengePassword)
``ExtraExtensions``   requested extensions other than subjectAltName (basicConstraints, keyUsage...)
``OrgMismatch``       the subject's O is not exactly the declared org
``HostsMismatch``     the SAN set is not exactly the declared hosts (names what is extra/missing)
====================  ==============================================================================

The declared ``hosts`` themselves are parsed with `parse_hosts`; a bad declaration raises
`InvalidHost`, not `CsrRejected` -- it is the declaration that is wrong, not the agent.

Only O is compared in the subject: the issued subject is built from the declaration
(``O=org, OU=name``), never copied from the CSR, so the CSR's other attributes have no effect.
Synchronous and pure (verifying one signature: well under a millisecond for ECDSA, ~0.1 ms for RSA).
Deliberately not here: which cluster may ask for which declaration (the issuer's reconciler knows
the NATS subject), rate limits, the ledger.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtensionOID, ObjectIdentifier

from shared.pki.errors import CsrRejected
from shared.pki.keys import MAX_PEM_BYTES
from shared.pki.names import diff_names, parse_hosts, quoted, san_names, subject_orgs
from shared.pki.pem import DECODING_ERRORS

__all__ = ["KeyPolicy", "check_csr"]

_PEM_CSR_BEGIN = b"-----BEGIN CERTIFICATE REQUEST-----"
# PKCS#9 extensionRequest, the attribute carrying requested extensions (cryptography names no
# constant for it).
_EXTENSION_REQUEST = ObjectIdentifier("1.2.840.113549.1.9.14")
_KNOWN_CURVES = frozenset({"secp256r1", "secp384r1", "secp521r1"})


@dataclass(frozen=True, slots=True, kw_only=True)
class KeyPolicy:
    """Which CSR keys the issuer signs.

    ``rsa_min_bits``: the smallest RSA modulus, in bits (2048: NIST SP 800-131A's floor).
    ``rsa_max_bits``: the largest, in bits (8192: bigger keys only cost verification time).
    ``ecdsa_curves``: allowed named curves, as `cryptography` names them (P-256 = ``secp256r1``,
    P-384 = ``secp384r1``; the two Istio's plug-in CA supports). An empty set forbids ECDSA.
    """

    rsa_min_bits: int = 2048
    rsa_max_bits: int = 8192
    ecdsa_curves: frozenset[str] = field(default=frozenset({"secp256r1", "secp384r1"}))

    def __post_init__(self) -> None:
        if not 2048 <= self.rsa_min_bits <= self.rsa_max_bits:
            raise ValueError(
                f"KeyPolicy: need 2048 <= rsa_min_bits ({self.rsa_min_bits}) <= rsa_max_bits "
                f"({self.rsa_max_bits})"
            )
        if unknown := set(self.ecdsa_curves) - _KNOWN_CURVES:
            raise ValueError(
                f"KeyPolicy: unknown curves {sorted(unknown)}; use {sorted(_KNOWN_CURVES)}"
            )

    def check(self, key: object) -> None:
        """Raise `CsrRejected` (``WeakKey`` / ``UnsupportedKey``) unless ``key`` is allowed."""
        if isinstance(key, rsa.RSAPublicKey):
            if key.key_size < self.rsa_min_bits:
                raise CsrRejected(
                    "WeakKey",
                    f"RSA key of {key.key_size} bits; at least {self.rsa_min_bits} required",
                )
            if key.key_size > self.rsa_max_bits:
                raise CsrRejected(
                    "UnsupportedKey",
                    f"RSA key of {key.key_size} bits; at most {self.rsa_max_bits} allowed",
                )
            return
        if isinstance(key, ec.EllipticCurvePublicKey):
            if key.curve.name not in self.ecdsa_curves:
                raise CsrRejected(
                    "UnsupportedKey",
                    f"ECDSA curve {key.curve.name}; allowed: {sorted(self.ecdsa_curves) or 'none'}",
                )
            return
        raise CsrRejected(
            "UnsupportedKey",
            f"{type(key).__name__.lstrip('_')}: only RSA and ECDSA keys are signed",
        )


def check_csr(
    csr_pem: bytes, *, hosts: Sequence[str], org: str, policy: KeyPolicy
) -> x509.CertificateSigningRequest:
    """Return the parsed CSR if it passes every check (see the module docstring), else raise."""
    declared = parse_hosts(hosts)
    csr = _parse(csr_pem)
    try:
        signature_ok = csr.is_signature_valid
        public_key = csr.public_key()
    except (ValueError, UnsupportedAlgorithm):
        # A key cryptography cannot even load (unknown curve, garbled SPKI).
        raise CsrRejected("UnsupportedKey", "the CSR's public key cannot be read") from None
    if not signature_ok:
        raise CsrRejected(
            "BadSignature",
            "the CSR's signature does not verify with its public key (altered, or not signed "
            "by the key it carries)",
        )
    policy.check(public_key)
    _check_attributes(csr)
    requested = _requested_names(csr)
    try:
        orgs = subject_orgs(csr.subject)
    except DECODING_ERRORS:
        raise CsrRejected("Malformed", "the CSR's subject cannot be decoded") from None
    if orgs != [org]:
        raise CsrRejected(
            "OrgMismatch",
            f"subject O is {', '.join(map(quoted, orgs)) or 'absent'}; the declaration says "
            f"{quoted(org)}",
        )
    if difference := diff_names(declared=declared, actual=requested):
        raise CsrRejected(
            "HostsMismatch", f"the CSR's SANs differ from the declared hosts: {difference}"
        )
    return csr


def _parse(csr_pem: bytes) -> x509.CertificateSigningRequest:
    if not isinstance(csr_pem, bytes):
        raise CsrRejected("Malformed", f"expected PEM bytes, got {type(csr_pem).__name__}")
    if len(csr_pem) > MAX_PEM_BYTES:
        raise CsrRejected("TooLarge", f"CSR is {len(csr_pem)} bytes, over {MAX_PEM_BYTES}")
    if csr_pem.count(b"-----BEGIN ") != 1 or _PEM_CSR_BEGIN not in csr_pem:
        raise CsrRejected("Malformed", "expected exactly one PEM 'CERTIFICATE REQUEST' block")
    try:
        return x509.load_pem_x509_csr(csr_pem)
    except DECODING_ERRORS:
        raise CsrRejected("Malformed", "not a readable PEM certificate signing request") from None


def _check_attributes(csr: x509.CertificateSigningRequest) -> None:
    try:
        attributes = list(csr.attributes)
    except DECODING_ERRORS:
        raise CsrRejected("Malformed", "the CSR's attributes cannot be decoded") from None
    extra = [a.oid.dotted_string for a in attributes if a.oid != _EXTENSION_REQUEST]
    if extra:
        raise CsrRejected(
            "ExtraAttributes", f"CSR attributes other than the extension request: {extra}"
        )


def _requested_names(csr: x509.CertificateSigningRequest) -> list[x509.GeneralName]:
    try:
        extensions = csr.extensions
    except DECODING_ERRORS:
        raise CsrRejected("Malformed", "the CSR's requested extensions cannot be decoded") from None
    extra = [
        f"{type(e.value).__name__} ({e.oid.dotted_string})"
        for e in extensions
        if e.oid != ExtensionOID.SUBJECT_ALTERNATIVE_NAME
    ]
    if extra:
        raise CsrRejected(
            "ExtraExtensions",
            f"the CSR requests extensions beyond subjectAltName: {extra}; the issuer sets them",
        )
    return san_names(extensions)
