"""PKI core shared by the issuer and the agent: keys, CSRs, intermediate-CA signing, Istio bundles.

The agent generates a key (`generate_private_key`), builds a CSR (`build_csr`) and, once signed,
checks and writes the bundle (`make_bundle`, `check_bundle`). The issuer loads its signing CA
(`load_signing_ca`), checks each CSR against the declaration (`check_csr`) and signs it
(`sign_intermediate`). Only `cryptography` does cryptography; nothing is hand-rolled.

Every function is synchronous and pure (no I/O, the clock is a parameter). Key generation and
signing are CPU-bound (RSA-4096 generation ~0.5 s, RSA-4096 signing ~9 ms): services run them in an
executor. Every deliberate failure is a `PkiError` with a stable ``reason`` and an operator-readable
``message``; none carries key material.
"""

from shared.pki.authority import SigningCA, load_signing_ca
from shared.pki.bundle import BUNDLE_FIELDS, Bundle, BundleInfo, check_bundle, make_bundle
from shared.pki.crosssign import Vouched, cross_sign, vouched_roots
from shared.pki.csr import build_csr, parse_hosts
from shared.pki.errors import (
    BundleInvalid,
    ChainInvalid,
    CsrRejected,
    InvalidHost,
    InvalidKey,
    InvalidKeySpec,
    InvalidSigningCA,
    InvalidSubject,
    PkiError,
    SigningRefused,
)
from shared.pki.fingerprints import fingerprint, serial_hex
from shared.pki.keys import (
    MAX_PEM_BYTES,
    KeyAlgorithm,
    KeySpec,
    PrivateKey,
    PublicKey,
    generate_private_key,
    load_private_key,
    private_key_to_pem,
)
from shared.pki.policy import KeyPolicy, check_csr
from shared.pki.rootca import create_root_ca
from shared.pki.signing import IssuedCertificate, name_constraints, sign_intermediate

__all__ = [
    "BUNDLE_FIELDS",
    "MAX_PEM_BYTES",
    "Bundle",
    "BundleInfo",
    "BundleInvalid",
    "ChainInvalid",
    "CsrRejected",
    "InvalidHost",
    "InvalidKey",
    "InvalidKeySpec",
    "InvalidSigningCA",
    "InvalidSubject",
    "IssuedCertificate",
    "KeyAlgorithm",
    "KeyPolicy",
    "KeySpec",
    "PkiError",
    "PrivateKey",
    "PublicKey",
    "SigningCA",
    "SigningRefused",
    "Vouched",
    "build_csr",
    "check_bundle",
    "check_csr",
    "create_root_ca",
    "cross_sign",
    "fingerprint",
    "generate_private_key",
    "load_private_key",
    "load_signing_ca",
    "make_bundle",
    "name_constraints",
    "parse_hosts",
    "private_key_to_pem",
    "serial_hex",
    "sign_intermediate",
    "vouched_roots",
]
