"""The error types of `shared.pki`: one base class, one subclass per activity.

Every error carries a stable ``reason`` (a short CamelCase code that callers may switch on, put in
``status.error`` or in a ``certificate.denied`` event) and a human ``message`` that says what was
wrong in words an operator can act on.

Invariant: no message, repr or ``str()`` of these errors ever contains key material, nor anything
derived from a private key beyond a public fingerprint. Code raising them passes only names,
indexes, subjects, SANs, sizes, dates and fingerprints; errors from `cryptography` that concern
private keys are replaced (``raise ... from None``), never wrapped, so their text cannot leak.

Each subclass lists the reasons it may carry in ``REASONS``; constructing one with an unknown reason
is a programming error (``ValueError``), which keeps the codes stable and greppable.
"""

from __future__ import annotations

from typing import ClassVar

from shared.runtime.errors import InvalidInput

__all__ = [
    "BundleInvalid",
    "ChainInvalid",
    "CsrRejected",
    "InvalidHost",
    "InvalidKey",
    "InvalidKeySpec",
    "InvalidSigningCA",
    "InvalidSubject",
    "PkiError",
    "SigningRefused",
]


class PkiError(InvalidInput):
    """Base of every error raised on purpose by `shared.pki`.

    ``reason`` is a stable code, ``message`` a sentence for an operator. Subclasses may restrict
    ``reason`` to their ``REASONS``; the base class accepts any non-empty code.
    """

    REASONS: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, reason: str, message: str) -> None:
        if not reason or (self.REASONS and reason not in self.REASONS):
            raise ValueError(f"{type(self).__name__}: unknown reason {reason!r}")
        super().__init__(reason, message)
        self.reason = reason
        self.message = message

    def __str__(self) -> str:
        return f"{self.reason}: {self.message}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}(reason={self.reason!r}, message={self.message!r})"


class InvalidKeySpec(PkiError, ValueError):
    """A `KeySpec` names an algorithm or size we do not generate (a configuration error).

    Also a ``ValueError``, so that settings validation (pydantic) reports it as a bad value.
    """

    REASONS = frozenset({"UnsupportedKey"})


class InvalidKey(PkiError):
    """A private key PEM could not be used: unreadable, encrypted, or of an unsupported type."""

    REASONS = frozenset({"Malformed", "Encrypted", "UnsupportedKey", "TooLarge"})


class InvalidHost(PkiError):
    """A declared host is empty or malformed; the message names it by index (``hosts[2]: ...``)."""

    REASONS = frozenset({"EmptyHost", "MalformedHost", "DuplicateHost"})


class InvalidSubject(PkiError):
    """The declared ``org`` or IssuedCertificate name cannot be put in an X.509 subject."""

    REASONS = frozenset({"InvalidSubject"})


class CsrRejected(PkiError):
    """The issuer refuses a CSR; ``reason`` says which check failed."""

    REASONS = frozenset(
        {
            "TooLarge",
            "Malformed",
            "BadSignature",
            "UnsupportedKey",
            "WeakKey",
            "ExtraExtensions",
            "ExtraAttributes",
            "OrgMismatch",
            "HostsMismatch",
        }
    )


class ChainInvalid(PkiError):
    """A certificate chain is out of order, broken, expired or fails RFC 5280 path validation.

    Raised by `shared.pki.chains`; the loaders re-raise it as their own error type with the same
    reason, so callers only ever see `InvalidSigningCA` or `BundleInvalid`.
    """

    REASONS = frozenset({"ChainBroken", "RootNotSelfSigned", "Expired", "NotYetValid", "Untrusted"})


class InvalidSigningCA(PkiError):
    """The signing Secret cannot be used to sign intermediates; ``reason`` says why."""

    REASONS = frozenset(
        {
            "MissingField",
            "AmbiguousForm",
            "TooLarge",
            "Malformed",
            "Encrypted",
            "UnsupportedKey",
            "KeyMismatch",
            "NotCA",
            "PathLenExhausted",
        }
        | ChainInvalid.REASONS
    )


class SigningRefused(PkiError):
    """`sign_intermediate` will not sign with this CA at this time or with these parameters."""

    REASONS = frozenset(
        {
            "SignerExpired",
            "SignerNotYetValid",
            "PathLenExceeded",
            "SubjectCollision",
            "UnsupportedKey",
        }
    )


class BundleInvalid(PkiError):
    """An issued bundle (Istio ``cacerts`` data) must not be written; ``reason`` says why."""

    REASONS = frozenset(
        {
            "MissingField",
            "TooLarge",
            "Malformed",
            "Encrypted",
            "UnsupportedKey",
            "KeyMismatch",
            "ChainOrder",
            "RootMismatch",
            "NotCA",
            "OrgMismatch",
            "HostsMismatch",
        }
        | ChainInvalid.REASONS
    )
