"""The issued Secret's data as Istio's plug-in CA expects it, and the check run before writing it.

`Bundle` holds the four PEMs of an Istio ``cacerts`` Secret:

- ``ca-cert.pem``: the issued intermediate (one certificate);
- ``ca-key.pem``: the agent's private key (PKCS#8) -- it never leaves the cluster;
- ``cert-chain.pem``: the issued intermediate followed by every certificate up to and including
  the root, each one signed by the next (Istio hands this chain to workloads as it is);
- ``root-cert.pem``: the roots the workloads trust: the one the chain ends at, and during a root
  rotation's overlap (docs/rotation.md) the other root as well (several certificates).

`check_bundle` -- the agent runs it before writing the Secret, tests use it on everything produced
-- refuses with `BundleInvalid` (``reason`` in brackets) unless: every field is present and readable
[``MissingField``, ``Malformed``, ``TooLarge``, ``Encrypted``, ``UnsupportedKey``]; the key belongs
to ``ca-cert.pem`` [``KeyMismatch``]; ``cert-chain.pem`` starts with ``ca-cert.pem``
[``ChainOrder``] and ends with one of the roots of ``root-cert.pem`` [``RootMismatch``], each of
which is a self-signed CA valid at ``now`` [its path-validation reason]; the chain is in order,
valid at ``now`` and passes RFC 5280 path validation to that root [``ChainBroken``,
``RootNotSelfSigned``, ``Expired``, ``NotYetValid``, ``Untrusted``]; ``ca-cert.pem`` is a CA
(CA:TRUE, keyCertSign) [``NotCA``]; its subject O is the declared org [``OrgMismatch``] and its
SANs are exactly the declared hosts [``HostsMismatch``].

Synchronous and pure. Deliberately not here: whether the certificate is the one the agent asked
for (compare `BundleInfo.public_key_fingerprint` with the CSR's), renewal timing, writing Secrets.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from cryptography import x509

from shared.pki.chains import check_ca_extensions, verify_path
from shared.pki.errors import BundleInvalid, ChainInvalid, InvalidKey
from shared.pki.fingerprints import fingerprint
from shared.pki.keys import load_private_key, public_key_der
from shared.pki.names import diff_names, parse_hosts, quoted, san_names, subject_orgs
from shared.pki.pem import DECODING_ERRORS, describe_certificate, load_certificates, spki_of
from shared.pki.signing import IssuedCertificate

__all__ = ["BUNDLE_FIELDS", "Bundle", "BundleInfo", "check_bundle", "make_bundle"]

BUNDLE_FIELDS = ("ca-cert.pem", "ca-key.pem", "cert-chain.pem", "root-cert.pem")


@dataclass(frozen=True, slots=True, kw_only=True)
class Bundle:
    """The four PEMs of the issued Secret. The key is excluded from repr."""

    ca_cert_pem: bytes
    ca_key_pem: bytes = field(repr=False)
    cert_chain_pem: bytes
    root_cert_pem: bytes

    def to_secret_data(self) -> dict[str, bytes]:
        """The Secret's ``data`` (before base64), keyed by Istio's file names."""
        return {
            "ca-cert.pem": self.ca_cert_pem,
            "ca-key.pem": self.ca_key_pem,
            "cert-chain.pem": self.cert_chain_pem,
            "root-cert.pem": self.root_cert_pem,
        }

    @classmethod
    def from_secret_data(cls, data: Mapping[str, bytes]) -> Bundle:
        """Read a Secret's ``data``; raise `BundleInvalid` (``MissingField``) if a field is absent.

        Other keys are ignored. Contents are not checked here: that is `check_bundle`.
        """
        if missing := [f for f in BUNDLE_FIELDS if f not in data]:
            raise BundleInvalid("MissingField", f"the Secret lacks {missing}")
        return cls(
            ca_cert_pem=data["ca-cert.pem"],
            ca_key_pem=data["ca-key.pem"],
            cert_chain_pem=data["cert-chain.pem"],
            root_cert_pem=data["root-cert.pem"],
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class BundleInfo:
    """Facts about a bundle that passed `check_bundle` (times timezone-aware UTC)."""

    serial: int
    not_before: dt.datetime
    not_after: dt.datetime
    fingerprint: str
    public_key_fingerprint: str


def make_bundle(issued: IssuedCertificate, key_pem: bytes) -> Bundle:
    """Assemble the bundle from what the issuer sent and the agent's own key. Checks nothing."""
    return Bundle(
        ca_cert_pem=issued.certificate_pem,
        ca_key_pem=key_pem,
        cert_chain_pem=issued.chain_pem,
        root_cert_pem=issued.root_pem,
    )


def check_bundle(bundle: Bundle, *, hosts: Sequence[str], org: str, now: dt.datetime) -> BundleInfo:
    """Facts about ``bundle`` if it is fit to write (see the module docstring), else raise."""
    declared = parse_hosts(hosts)
    cert = _single(bundle.ca_cert_pem, "ca-cert.pem")
    roots = load_certificates(bundle.root_cert_pem, field="root-cert.pem", error=BundleInvalid)
    chain = load_certificates(bundle.cert_chain_pem, field="cert-chain.pem", error=BundleInvalid)
    try:
        key = load_private_key(bundle.ca_key_pem)
    except InvalidKey as exc:
        raise BundleInvalid(exc.reason, f"ca-key.pem: {exc.message}") from None
    if public_key_der(key) != spki_of(cert):
        raise BundleInvalid(
            "KeyMismatch",
            f"ca-key.pem is not the private key of ca-cert.pem {describe_certificate(cert)}",
        )
    if chain[0] != cert:
        raise BundleInvalid(
            "ChainOrder",
            f"cert-chain.pem must start with ca-cert.pem; it starts with "
            f"{describe_certificate(chain[0])}",
        )
    _check_roots(chain, roots, now=now)
    if why := check_ca_extensions(cert):
        raise BundleInvalid("NotCA", f"ca-cert.pem {describe_certificate(cert)}: {why}")
    orgs = subject_orgs(cert.subject)
    if orgs != [org]:
        raise BundleInvalid(
            "OrgMismatch",
            f"ca-cert.pem subject O is {', '.join(map(quoted, orgs)) or 'absent'}; declared "
            f"{quoted(org)}",
        )
    try:
        names = san_names(cert.extensions)
    except DECODING_ERRORS:
        raise BundleInvalid("Malformed", "ca-cert.pem: its extensions cannot be decoded") from None
    if difference := diff_names(declared=declared, actual=names):
        raise BundleInvalid(
            "HostsMismatch", f"ca-cert.pem SANs differ from the declared hosts: {difference}"
        )
    return BundleInfo(
        serial=cert.serial_number,
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        fingerprint=fingerprint(cert),
        public_key_fingerprint=fingerprint(key.public_key()),
    )


def _check_roots(
    chain: Sequence[x509.Certificate], roots: Sequence[x509.Certificate], *, now: dt.datetime
) -> None:
    """The chain ends at one of ``roots`` and is valid to it; every other root is a valid
    self-signed CA (it goes to the workloads as trusted)."""
    if chain[-1] not in roots:
        held = ", ".join(describe_certificate(root) for root in roots)
        raise BundleInvalid(
            "RootMismatch",
            f"cert-chain.pem must end with a root of root-cert.pem ({held}); it ends with "
            f"{describe_certificate(chain[-1])}",
        )
    try:
        verify_path(chain, now=now)
    except ChainInvalid as exc:
        raise BundleInvalid(exc.reason, f"cert-chain.pem: {exc.message}") from None
    for other in roots:
        if other != chain[-1]:
            try:
                verify_path([other], now=now)
            except ChainInvalid as exc:
                raise BundleInvalid(exc.reason, f"root-cert.pem: {exc.message}") from None


def _single(pem: bytes, field_name: str) -> x509.Certificate:
    certificates = load_certificates(pem, field=field_name, error=BundleInvalid)
    if len(certificates) != 1:
        raise BundleInvalid(
            "Malformed",
            f"{field_name}: expected exactly one certificate, found {len(certificates)}",
        )
    return certificates[0]
