"""The issuer's decisions as a chain of small pure policies, cert-manager style.

Each policy is a check `func(input) -> Finding | None` (a `shared.controller.policy.Chain`);
the first finding is the denial, None means allowed. Two chains:

- `DECLARATION_CHAIN` decides whether a declaration may be published to its cluster at all: the
  signing Secret must be in one of the issuer's signing namespaces, the declaration inside its
  cluster's ClusterRegistration (when there is one: allowed CAs, maxTTL, host patterns and name
  constraints), the Secret must exist and hold a usable CA, and hosts and org must fit in a
  certificate.
  A denial here is written to the management object as FAILED with the message as its error.
- `CSR_CHAIN` authorises one `csr.requested` against the declaration the issuer owns for the
  cluster in the subject: the declaration exists (in *that* cluster's namespace), is the same
  object and generation the agent answers, is not being deleted, its signing Secret is in a
  signing namespace, it is inside the cluster's registration, its signing CA is usable, and
  the CSR passes the PKI core's check (hosts and org exactly as declared, proof of possession,
  key policy). A denial here becomes `certificate.denied` with the reason.

Everything here is synchronous and pure (no I/O, no clock): the handlers gather the inputs, the
policies decide. Messages are for operators and never quote the CSR or any key.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from pydantic import ValidationError

from shared.api import reasons
from shared.api.registrations import ClusterRegistration, NameConstraintsSpec, host_pattern
from shared.api.v1alpha2 import IssuedCertificate, ObjectRef
from shared.controller.policy import Chain, Finding
from shared.events import CsrRequestedData
from shared.pki import CsrRejected, InvalidHost, InvalidSubject, KeyPolicy, SigningCA, check_csr
from shared.pki.names import parse_hosts, subject_for

__all__ = [
    "CSR_CHAIN",
    "DECLARATION_CHAIN",
    "CsrInput",
    "DeclarationInput",
    "RegistrationState",
    "SigningState",
    "authorise",
    "ca_not_registered",
    "check_declaration",
    "forbidden_secret",
    "registration_for",
    "registration_problem",
    "scope_problem",
]


SigningState = SigningCA | Finding
"""The loaded signing CA, or why it cannot be used right now: a `Finding` with reason
`SigningSecretMissing`, `SigningSecretInvalid`, `SigningSecretOutOfScope` or
`SigningSecretForbidden` (the chains return it as it is)."""


def scope_problem(namespace: str, name: str, scope: Sequence[str]) -> Finding | None:
    """Why the Secret `namespace/name` may not sign under the signing namespaces `scope`, or
    None when it may (an empty scope is the permissive mode: any namespace).

    The handlers ask this before reading the Secret (one outside the scope is never read);
    the chains ask it again from the declaration, so no path signs with such a CA."""
    if not scope or namespace in scope:
        return None
    where = scope[0] if len(scope) == 1 else f"one of {', '.join(scope)}"
    return Finding(
        reasons.SIGNING_SECRET_OUT_OF_SCOPE,
        f"signingCertificateSecret {namespace}/{name} is outside the issuer's signing "
        f"namespaces ({', '.join(scope)}): the issuer signs only with CA Secrets there "
        "(MESHTRUST_ISSUER_SIGNING_NAMESPACES, set by its administrator). Point "
        f"signingCertificateSecret at a CA Secret in {where}, or have the administrator "
        f"add namespace {namespace} to that setting",
    )


def forbidden_secret(namespace: str, name: str, server_message: str) -> Finding:
    """The API server refused (403) to let the issuer read the signing Secret: waiting will not
    help, a person must grant the read or change the reference."""
    return Finding(
        reasons.SIGNING_SECRET_FORBIDDEN,
        f"the issuer may not read signingCertificateSecret {namespace}/{name} (403 Forbidden: "
        f"{server_message[:300]}). Grant the issuer's ServiceAccount get on that Secret (a "
        f"Role and RoleBinding in namespace {namespace}), or point signingCertificateSecret "
        "at a CA Secret the issuer may read",
    )


RegistrationState = ClusterRegistration | Finding | None
"""The cluster's ClusterRegistration; None: there is none and none is required (the permissive
mode); a `Finding`: it cannot be read, or there is none and the issuer requires one."""


@dataclass(frozen=True, slots=True, kw_only=True)
class DeclarationInput:
    declaration: IssuedCertificate
    signing: SigningState
    signing_namespaces: tuple[str, ...] = ()
    """The issuer's signing namespaces; empty: any (the permissive mode)."""
    registration: RegistrationState = None


@dataclass(frozen=True, slots=True, kw_only=True)
class CsrInput:
    cluster: str
    """From the subject (per-cluster NATS permissions make it the sender's cluster)."""
    request: CsrRequestedData
    declaration: IssuedCertificate | None
    """The IssuedCertificate `request.name` in namespace `cluster`, read live; None if absent."""
    signing: SigningState | None
    """None when there is no declaration to take a signing Secret from."""
    policy: KeyPolicy
    signing_namespaces: tuple[str, ...] = ()
    """The issuer's signing namespaces; empty: any (the permissive mode)."""
    registration: RegistrationState = None
    rotated_to: ObjectRef | None = None
    """During a rotation step that signs with the rotation's new CA: that CA's Secret (the
    cluster's registration must allow it as well)."""


# --- cluster registrations --------------------------------------------------------------------


def registration_for(
    cluster: str, raw: Mapping[str, Any] | None, *, namespace: str, required: bool
) -> RegistrationState:
    """The registration `namespace/<cluster>` as the cache holds it (`raw`), validated."""
    where = f"ClusterRegistration {namespace}/{cluster}"
    if raw is None:
        if not required:
            return None
        return Finding(
            reasons.CLUSTER_NOT_REGISTERED,
            f"cluster {cluster} has no {where}, and the issuer signs only for registered "
            f"clusters (MESHTRUST_ISSUER_REQUIRE_REGISTRATION). Have the administrator create "
            f"{where} (docs/issuer.md, Cluster registrations)",
        )
    try:
        return ClusterRegistration.from_object(raw)
    except ValidationError as exc:
        fields = ", ".join(".".join(map(str, e["loc"])) for e in exc.errors()[:5])
        return Finding(
            reasons.REGISTRATION_INVALID,
            f"{where} cannot be read (fields: {fields}): nothing of cluster {cluster} is "
            "signed until the administrator fixes it",
        )


def _outside_constraints(host: str, constraints: NameConstraintsSpec) -> str | None:
    """Why `host` lies outside the permitted subtrees, or None."""
    if "://" in host:
        domain = constraints.trust_domain
        if domain is not None and urlsplit(host).hostname != domain:
            return f"its host is not the trust domain {domain}"
        return None
    suffixes = constraints.dns_suffixes
    if suffixes and not any(host == s or host.endswith("." + s) for s in suffixes):
        return f"it is under none of the DNS suffixes {', '.join(suffixes)}"
    return None


def _host_problem(host: str, registration: ClusterRegistration) -> str | None:
    spec = registration.spec
    if spec.hosts and not any(host_pattern(p).fullmatch(host) for p in spec.hosts):
        return f"it matches none of the host patterns ({', '.join(spec.hosts)})"
    if spec.name_constraints is not None:
        return _outside_constraints(host, spec.name_constraints)
    return None


def ca_not_registered(
    registration: RegistrationState, ref: ObjectRef, *, what: str = "signingCertificateSecret"
) -> Finding | None:
    """Why the cluster's registration does not allow signing with the CA Secret `ref` (`what`
    names it for people), or None: allowed, no list in the registration, or no registration."""
    if not isinstance(registration, ClusterRegistration):
        return registration
    allowed = registration.spec.signing_certificate_secrets
    if not allowed or any((a.namespace, a.name) == (ref.namespace, ref.name) for a in allowed):
        return None
    names = ", ".join(f"{a.namespace}/{a.name}" for a in allowed)
    return Finding(
        reasons.SIGNING_CA_NOT_REGISTERED,
        f"{what} {ref.namespace}/{ref.name} is not among the CAs ClusterRegistration "
        f"{registration.key} allows (signingCertificateSecrets: {names})",
    )


def registration_problem(
    declaration: IssuedCertificate, registration: RegistrationState
) -> Finding | None:
    """Why the declaration lies outside its cluster's registration, or None (inside, or no
    registration and none required). Checked: the signing CA, the TTL, each host."""
    if registration is None or isinstance(registration, Finding):
        return registration
    spec, where = declaration.spec, f"ClusterRegistration {registration.key}"
    refused = ca_not_registered(registration, spec.signing_certificate_secret)
    if refused is not None:
        return refused
    limit = registration.spec.max_lifetime
    if limit is not None and spec.cert_options.lifetime > limit:
        return Finding(
            reasons.TTL_ABOVE_REGISTRATION,
            f"certOptions asks a lifetime of {spec.cert_options.lifetime}; {where} allows at "
            f"most {limit} (maxTTL {registration.spec.max_ttl})",
        )
    for index, host in enumerate(spec.hosts):
        why = _host_problem(host, registration)
        if why is not None:
            return Finding(
                reasons.HOST_NOT_REGISTERED,
                f"hosts[{index}] {host!r} is outside {where}: {why}",
            )
    return None


# --- declarations ------------------------------------------------------------------------------


def _in_scope(declaration: IssuedCertificate, scope: tuple[str, ...]) -> Finding | None:
    ref = declaration.spec.signing_certificate_secret
    return scope_problem(ref.namespace, ref.name, scope)


def signing_secret_in_scope(value: DeclarationInput) -> Finding | None:
    """Only the administrator's signing namespaces hold CAs that may sign (whatever Secret a
    declaration's author names)."""
    return _in_scope(value.declaration, value.signing_namespaces)


def signing_ca_usable(value: DeclarationInput) -> Finding | None:
    """A declaration whose signing Secret is missing or invalid cannot be served."""
    if isinstance(value.signing, Finding):
        return value.signing
    return None


def names_fit_a_certificate(value: DeclarationInput) -> Finding | None:
    """hosts must be valid SANs and org/name must fit an X.509 subject."""
    spec = value.declaration.spec
    try:
        parse_hosts(spec.hosts)
        subject_for(org=spec.org, name=value.declaration.metadata.name)
    except (InvalidHost, InvalidSubject) as exc:
        return Finding(reasons.INVALID_DECLARATION, f"spec cannot be issued: {exc.message}")
    return None


def inside_registration(value: DeclarationInput) -> Finding | None:
    """The administrator's registration of the cluster bounds what its declarations ask."""
    return registration_problem(value.declaration, value.registration)


DECLARATION_CHAIN: Chain[DeclarationInput] = Chain(
    signing_secret_in_scope,
    inside_registration,
    signing_ca_usable,
    names_fit_a_certificate,
)


def check_declaration(value: DeclarationInput) -> Finding | None:
    """Run `DECLARATION_CHAIN`: None (served), or the first denial."""
    return DECLARATION_CHAIN.evaluate(value)


# --- CSRs --------------------------------------------------------------------------------------


def declaration_exists(value: CsrInput) -> Finding | None:
    if value.declaration is None:
        return Finding(
            reasons.NO_DECLARATION,
            f"cluster {value.cluster!r} has no IssuedCertificate {value.request.name!r}: the "
            f"management cluster declares none of that name in namespace {value.cluster!r}",
        )
    return None


def same_declaration(value: CsrInput) -> Finding | None:
    """The uid guards against a declaration deleted and re-created under the same name."""
    assert value.declaration is not None
    uid = value.declaration.metadata.uid
    if uid != value.request.declaration_uid:
        return Finding(
            reasons.DECLARATION_REPLACED,
            f"IssuedCertificate {value.cluster}/{value.request.name} was re-created (uid {uid}); "
            f"the CSR answers uid {value.request.declaration_uid}",
        )
    return None


def not_being_deleted(value: CsrInput) -> Finding | None:
    assert value.declaration is not None
    if value.declaration.metadata.deletion_timestamp is not None:
        return Finding(
            reasons.DECLARATION_DELETED,
            f"IssuedCertificate {value.cluster}/{value.request.name} is being deleted",
        )
    return None


def generation_is_current(value: CsrInput) -> Finding | None:
    assert value.declaration is not None
    current = value.declaration.metadata.generation or 1
    asked = value.request.declaration_generation
    if asked < current:
        return Finding(
            reasons.SUPERSEDED_GENERATION,
            f"the CSR answers generation {asked} of {value.cluster}/{value.request.name}; the "
            f"declaration is at generation {current}",
        )
    if asked > current:
        return Finding(
            reasons.UNKNOWN_GENERATION,
            f"the CSR answers generation {asked} of {value.cluster}/{value.request.name}, which "
            f"the management cluster has not declared (it is at {current})",
        )
    return None


def signing_secret_allowed(value: CsrInput) -> Finding | None:
    assert value.declaration is not None
    return _in_scope(value.declaration, value.signing_namespaces)


def csr_inside_registration(value: CsrInput) -> Finding | None:
    assert value.declaration is not None
    return registration_problem(value.declaration, value.registration)


def rotation_ca_registered(value: CsrInput) -> Finding | None:
    """A rotation step signing with the new CA: the cluster's registration must allow it."""
    if value.rotated_to is None:
        return None
    return ca_not_registered(
        value.registration, value.rotated_to, what="the rotation's new CA Secret"
    )


def signing_ca_ready(value: CsrInput) -> Finding | None:
    if isinstance(value.signing, Finding):
        return value.signing
    if value.signing is None:  # pragma: no cover - declaration_exists denies first
        return Finding(reasons.SIGNING_SECRET_MISSING, "no signing Secret")
    return None


def declaration_fits(value: CsrInput) -> Finding | None:
    assert value.declaration is not None
    assert value.signing is not None
    return names_fit_a_certificate(
        DeclarationInput(declaration=value.declaration, signing=value.signing)
    )


def csr_matches_declaration(value: CsrInput) -> Finding | None:
    """The PKI core's check: hosts and org exactly, proof of possession, key policy."""
    assert value.declaration is not None
    spec = value.declaration.spec
    try:
        check_csr(
            value.request.csr_pem.encode(), hosts=spec.hosts, org=spec.org, policy=value.policy
        )
    except CsrRejected as exc:
        return Finding(exc.reason, exc.message)
    return None


CSR_CHAIN: Chain[CsrInput] = Chain(
    declaration_exists,
    same_declaration,
    not_being_deleted,
    generation_is_current,
    signing_secret_allowed,
    csr_inside_registration,
    rotation_ca_registered,
    signing_ca_ready,
    declaration_fits,
    csr_matches_declaration,
)


def authorise(value: CsrInput) -> Finding | None:
    """Run `CSR_CHAIN`: None (allowed), or the first denial."""
    return CSR_CHAIN.evaluate(value)
