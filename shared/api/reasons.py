"""Reason codes: the stable CamelCase strings a decision is recorded under.

One constant per code, as cert-manager's `policies/constants.go`, so a reason is spelled once.
The values are a contract: they appear in IssuedCertificate status, Kubernetes Events, metric
labels, `certificate.denied` answers and tests, and must never change. Grouped by who decides;
the PKI core's own codes (`CsrRejected.reason`, bundle checks) stay in `shared.pki`.
"""

from __future__ import annotations

from typing import Final

# --- the agent: why an IssuedCertificate is (re-)issued ----------------------------------------

PENDING: Final = "Pending"
"""A new IssuedCertificate."""
SPEC_CHANGED: Final = "SpecChanged"
"""The generation differs from the observed one."""
RETRY: Final = "Retry"
"""A failed issuance's backoff has passed."""
SECRET_MISSING: Final = "SecretMissing"  # noqa: S105 - a reason code, not a password
SECRET_INVALID: Final = "SecretInvalid"  # noqa: S105 - a reason code, not a password
SECRET_MISMATCH: Final = "SecretMismatch"  # noqa: S105 - a reason code, not a password
SIGNING_CA_CHANGED: Final = "SigningCAChanged"
RENEWAL_DUE: Final = "RenewalDue"
KEY_LOST: Final = "KeyLost"
"""The key Secret of the requested issuance is gone."""

# --- the agent: why an issuance failed or waits -------------------------------------------------

INVALID_SPEC: Final = "InvalidSpec"
BOUNCE_FAILED: Final = "BounceFailed"
DENIED: Final = "Denied"
"""A denial that carried no reason of its own."""
REFUSED: Final = "Refused"
"""A refused certificate.issued that carried no reason of its own."""

# --- the agent: why a certificate.issued is refused (`services.agent.trust`) -------------------

TRUST_BUNDLE_MISSING: Final = "TrustBundleMissing"
TRUST_BUNDLE_INVALID: Final = "TrustBundleInvalid"
UNTRUSTED_ROOT: Final = "UntrustedRoot"
CSR_UNREADABLE: Final = "CsrUnreadable"
KEY_MISMATCH: Final = "KeyMismatch"
VALIDITY_TOO_LONG: Final = "ValidityTooLong"
SERIAL_MISMATCH: Final = "SerialMismatch"
VALIDITY_MISMATCH: Final = "ValidityMismatch"

# --- the agent: the reasons of its Events --------------------------------------------------------

ISSUED: Final = "Issued"
FINISHED: Final = "Finished"
TRUST_BUNDLE_UNAVAILABLE: Final = "TrustBundleUnavailable"
UNTRUSTED_CERTIFICATE: Final = "UntrustedCertificate"
NOT_MANAGED: Final = "NotManaged"
"""An object of the desired state's name exists in the cluster and meshtrust does not manage it."""
WRONG_OBJECT: Final = "WrongObject"
"""A desired-state value names another object than its key."""
SECRET_TAMPERED: Final = "IssuedSecretTampered"  # noqa: S105 - a reason code
"""Warning: the issued Secret was changed under the agent (unreadable, or not the issuance's)."""
FOREIGN_CA: Final = "ForeignCA"
"""Warning: the issued Secret (`cacerts`) holds a CA that chains to no pinned root."""
FORBIDDEN: Final = "Forbidden"
"""FAILED: the agent's ServiceAccount may not read or write an object the issuance needs."""

# --- the issuer: why a declaration is not served or a CSR is denied -----------------------------

INVALID_DECLARATION: Final = "InvalidDeclaration"
AMBIGUOUS_NAMESPACE: Final = "AmbiguousNamespace"
NO_DECLARATION: Final = "NoDeclaration"
DECLARATION_REPLACED: Final = "DeclarationReplaced"
DECLARATION_DELETED: Final = "DeclarationDeleted"
SUPERSEDED_GENERATION: Final = "SupersededGeneration"
UNKNOWN_GENERATION: Final = "UnknownGeneration"
ISSUANCE_REUSED: Final = "IssuanceReused"
RATE_LIMITED: Final = "RateLimited"
"""A cluster over its issuance rate: not a failure, a time to wait (the agent re-sends)."""
SIGNING_SECRET_MISSING: Final = "SigningSecretMissing"  # noqa: S105 - a reason code
SIGNING_SECRET_INVALID: Final = "SigningSecretInvalid"  # noqa: S105 - a reason code
SIGNING_SECRET_OUT_OF_SCOPE: Final = "SigningSecretOutOfScope"  # noqa: S105 - a reason code
SIGNING_SECRET_FORBIDDEN: Final = "SigningSecretForbidden"  # noqa: S105 - a reason code
SIGNING_ROOT_CHANGED: Final = "SigningRootChanged"
"""The signing Secret now ends at another root, and no CertificateRotation covers it."""
TRUST_SPLIT: Final = "TrustSplit"
"""A root rotation narrowed to some clusters would leave others naming the same Secret on the
old root only: it pauses, unless `allowTrustSplit`."""

# --- the issuer: a declaration or CSR outside its cluster's ClusterRegistration -----------------

CLUSTER_NOT_REGISTERED: Final = "ClusterNotRegistered"
"""No ClusterRegistration for the cluster, and the issuer requires one."""
REGISTRATION_INVALID: Final = "RegistrationInvalid"
"""The cluster's ClusterRegistration cannot be read: nothing of the cluster is signed."""
HOST_NOT_REGISTERED: Final = "HostNotRegistered"
"""A host matches none of the registration's patterns, or lies outside its name constraints."""
SIGNING_CA_NOT_REGISTERED: Final = "SigningCANotRegistered"
"""The signing Secret is not one the registration allows."""
TTL_ABOVE_REGISTRATION: Final = "TTLAboveRegistration"
"""certOptions asks a longer lifetime than the registration's maxTTL."""
