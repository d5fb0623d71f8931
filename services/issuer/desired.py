"""The value a declaration calls for in the KV bucket `meshtrust-desired`, and reading it back.

`desired_certificate` checks the declaration (`policies.check_declaration`) and builds the
`DesiredObject` the issuer publishes for it; `parse_entry` reads an entry of the bucket. Pure
but for the logging of an unreadable entry; the reconciler publishes (compare-and-set).
"""

from __future__ import annotations

from pydantic import ValidationError

from services.issuer.entries import readable
from services.issuer.policies import (
    DeclarationInput,
    RegistrationState,
    SigningState,
    check_declaration,
)
from shared.api import reasons
from shared.api.meta import Obj, ObjectKey
from shared.api.v1alpha2 import IssuedCertificate
from shared.bus import KvEntry
from shared.controller.policy import Finding
from shared.events import DesiredKind, DesiredObject, decode_value


def parse_entry(entry: KvEntry) -> DesiredObject | None:
    """The entry's value, or None when it cannot be read: then it is replaced (compare-and-set
    on its revision) by the value the declaration calls for, as a stale one would be."""
    value = decode_value(DesiredObject, entry.value)
    return readable(entry, value, unreadable="desired entry unreadable; replacing it")


def desired_certificate(
    key: ObjectKey,
    raw: Obj,
    declaration: IssuedCertificate,
    signing: SigningState,
    chain_fingerprint: str | None,
    *,
    scope: tuple[str, ...],
    registration: RegistrationState = None,
) -> DesiredObject | Finding:
    """The value a declaration calls for, or why it may not be published: `DECLARATION_CHAIN`
    (`scope`: the signing namespaces), or a Secret namespace that is not a namespace name."""
    verdict = check_declaration(
        DeclarationInput(
            declaration=declaration,
            signing=signing,
            signing_namespaces=scope,
            registration=registration,
        )
    )
    if verdict is not None:
        return verdict
    try:
        return DesiredObject(
            cluster=key.namespace,
            kind=DesiredKind.ISSUED_CERTIFICATE,
            name=key.name,
            namespace=declaration.spec.issued_certificate_secret.namespace,
            uid=declaration.metadata.uid or "",
            generation=declaration.metadata.generation or 1,
            spec=raw.get("spec") or {},
            signing_chain_fingerprint=chain_fingerprint,
        )
    except ValidationError:
        return Finding(
            reasons.INVALID_DECLARATION,
            "spec.issuedCertificateSecret.namespace is not a namespace name",
        )
