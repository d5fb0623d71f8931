"""Checking a certificate path ``[leaf, ..., root]`` as given: order, validity, RFC 5280 validation.

A path is valid when

1. each certificate is directly issued by the next one (issuer name and signature, checked by
   `cryptography`'s ``verify_directly_issued_by``), and the last one is self-signed -- so the order
   is exactly the order Istio's ``cert-chain.pem`` must have;
2. every certificate is within its validity period at ``now`` (checked by us too, to name the
   expired one in the message);
3. `cryptography`'s RFC 5280 path validation (``x509.verification``) accepts it with the last
   certificate as the only trust anchor: basicConstraints, pathLenConstraint, name constraints,
   signature algorithms, key sizes.

The leaf here is itself a CA (a signing CA or an issued intermediate), so the CA extension policy is
applied to the leaf too. Where the library's web-PKI defaults are stricter than RFC 5280, we follow
RFC 5280 section 6.1.4 (n): a CA certificate *without* keyUsage is accepted (many ``openssl req
-x509`` roots have none); one *with* keyUsage must assert keyCertSign.

Errors: `ChainInvalid` with reason ``ChainBroken``, ``RootNotSelfSigned``, ``Expired``,
``NotYetValid`` or ``Untrusted`` (the library's verdict, quoted). Callers re-raise it as their own
error type. Deliberately not here: revocation (CRL/OCSP), path *building* from unordered pools.
"""

from __future__ import annotations

import datetime as dt
import functools
import itertools
from collections.abc import Sequence

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.x509 import verification

from shared.pki.errors import ChainInvalid
from shared.pki.pem import DECODING_ERRORS, describe_certificate

__all__ = ["check_ca_extensions", "issued_by", "verify_path"]


def verify_path(path: Sequence[x509.Certificate], *, now: dt.datetime) -> None:
    """Raise `ChainInvalid` unless ``path`` (leaf first, root last) is valid at ``now``.

    A naive ``now`` is a programming error (``ValueError``): certificate times are UTC.

    Signatures are verified once each where that suffices: with no intermediates, the library's
    path validation (anchor: the root) can only succeed through the leaf's signature by the root,
    so the link is checked separately only to explain a failure; the root's self-signature is
    remembered per root. Longer paths have every link checked, since path validation could pick
    its intermediates in another order than the one given.
    """
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    if not path:
        raise ChainInvalid("ChainBroken", "empty certificate chain")
    if len(path) > 2:
        _check_links(path)
    else:
        _check_root(path[-1])
    root = path[-1]
    builder = (
        verification.PolicyBuilder()
        .store(verification.Store([root]))
        .time(now.astimezone(dt.UTC))
        .extension_policies(ca_policy=_CA_POLICY, ee_policy=_CA_POLICY)
    )
    try:
        builder.build_client_verifier().verify(path[0], list(path[1:-1]))
    except verification.VerificationError as exc:
        # Say what is wrong in our words where we can: the broken link, else the expired one.
        _check_links(path)
        _check_validity(path, now=now)
        raise ChainInvalid(
            "Untrusted",
            f"RFC 5280 path validation failed for {describe_certificate(path[0])}: {exc}",
        ) from None
    _check_validity(path, now=now)


def check_ca_extensions(certificate: x509.Certificate) -> str | None:
    """``None`` if the certificate may sign certificates (CA:TRUE, keyCertSign), else why not."""
    try:
        extensions = certificate.extensions
    except DECODING_ERRORS:
        return "its extensions cannot be decoded"
    try:
        constraints = extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        return "it has no basicConstraints extension, so it is not a CA"
    if not constraints.ca:
        return "its basicConstraints say CA:FALSE"
    try:
        usage = extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return None
    if not usage.key_cert_sign:
        return "its keyUsage lacks keyCertSign"
    return None


def _check_links(path: Sequence[x509.Certificate]) -> None:
    for position, (child, parent) in enumerate(itertools.pairwise(path)):
        if not issued_by(child, parent):
            raise ChainInvalid(
                "ChainBroken",
                f"certificate {position} {describe_certificate(child)} is not issued by "
                f"certificate {position + 1} {describe_certificate(parent)}; the chain must run "
                "from the certificate up to the root, each one signed by the next",
            )
    _check_root(path[-1])


def _check_root(root: x509.Certificate) -> None:
    if not _self_signed(root):
        raise ChainInvalid(
            "RootNotSelfSigned",
            f"the last certificate {describe_certificate(root)} is not a self-signed root",
        )


@functools.lru_cache(maxsize=64)
def _self_signed(root: x509.Certificate) -> bool:
    """Per root (certificates hash and compare by their DER): every issuance meets the same."""
    return issued_by(root, root)


def issued_by(child: x509.Certificate, parent: x509.Certificate) -> bool:
    """Whether ``parent`` names and signed ``child`` (no other check)."""
    try:
        child.verify_directly_issued_by(parent)
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        return False
    return True


def _check_validity(path: Sequence[x509.Certificate], *, now: dt.datetime) -> None:
    for position, certificate in enumerate(path):
        if now >= certificate.not_valid_after_utc:
            raise ChainInvalid(
                "Expired",
                f"certificate {position} {describe_certificate(certificate)} expired at "
                f"{certificate.not_valid_after_utc.isoformat()}",
            )
        if now < certificate.not_valid_before_utc:
            raise ChainInvalid(
                "NotYetValid",
                f"certificate {position} {describe_certificate(certificate)} is not valid before "
                f"{certificate.not_valid_before_utc.isoformat()}",
            )


def _key_usage_allows_signing(
    policy: verification.Policy, certificate: x509.Certificate, usage: x509.KeyUsage | None
) -> None:
    del policy, certificate  # the validator's signature is fixed by cryptography
    if usage is not None and not usage.key_cert_sign:
        raise ValueError("keyUsage present without keyCertSign")


# Built once: the policy objects are immutable.
_CA_POLICY = verification.ExtensionPolicy.webpki_defaults_ca().may_be_present(
    x509.KeyUsage, verification.Criticality.AGNOSTIC, _key_usage_allows_signing
)
