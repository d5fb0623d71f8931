"""The messages the agent publishes, built from the objects they are about: `csr.requested`,
`bounce.requested`, `status.changed`.

Pure: each builder turns values into an envelope, nothing is sent here. Publishing is the
reconciler's alone (it is the one place for transitions, docs/agent.md), including the
`status.changed` of a declaration the cluster refused, which desired state hands it.

Deliberately not here: when to send (policies) and the sending itself (the reconciler).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from services.agent.objects import (
    KeySecret,
    declaration_generation,
    declaration_generation_or_none,
    declaration_uid,
)
from shared.api.meta import Obj, ObjectKey, metadata
from shared.api.v1alpha2 import IssuedCertificateStatus
from shared.api.v1alpha2 import ObjectRef as DirectiveRef
from shared.events import (
    BounceRequested,
    BounceRequestedData,
    CertificateState,
    CsrRequested,
    CsrRequestedData,
    DesiredObject,
    ObjectRef,
    StatusChanged,
    StatusChangedData,
)

ERROR_LIMIT = 4096
"""Characters of a status error carried by `status.changed` (the event's field limit)."""


def derived_issuance(uid: object, generation: object) -> str:
    """An issuance id for a status.changed of an object that never had an issuance (invalid
    from the start, or refused by the cluster): stable per declaration (or object) and
    generation, so repeats correlate. The one place this id is made."""
    seed = f"{uid}:{generation}"
    return hashlib.sha256(seed.encode()).hexdigest()[:32]


@dataclass(frozen=True, slots=True, kw_only=True)
class Messages:
    """Envelopes from this agent: `source` is `agent/<instance>`, `cluster` its cluster."""

    source: str
    cluster: str

    def csr_requested(
        self, key: ObjectKey, raw: Obj, secret: KeySecret, attempt: int
    ) -> CsrRequested:
        return CsrRequested(
            source=self.source,
            cluster=self.cluster,
            issuance=secret.material.issuance,
            data=CsrRequestedData(
                name=key.name,
                declaration_uid=declaration_uid(raw),
                declaration_generation=declaration_generation(raw),
                csr_pem=secret.csr_pem.decode(),
                attempt=attempt,
                trust_epoch=secret.material.trust_epoch or None,
            ),
        )

    def bounce_requested(
        self, key: ObjectKey, issuance: str, directive: DirectiveRef
    ) -> BounceRequested:
        return BounceRequested(
            source=self.source,
            cluster=self.cluster,
            issuance=issuance,
            data=BounceRequestedData(
                directive=ObjectRef(namespace=directive.namespace, name=directive.name),
                issued_certificate=ObjectRef(namespace=key.namespace, name=key.name),
            ),
        )

    def status_changed(
        self, key: ObjectKey, obj: Obj, status: IssuedCertificateStatus
    ) -> StatusChanged:
        """The transition of `obj` (as written) to `status`."""
        meta = metadata(obj)
        return StatusChanged(
            source=self.source,
            cluster=self.cluster,
            issuance=status.issuance_id
            or derived_issuance(meta.get("uid"), meta.get("generation")),
            data=StatusChangedData(
                name=key.name,
                namespace=key.namespace,
                state=CertificateState(status.state.value),
                error=status.error[:ERROR_LIMIT] or None,
                observed_generation=status.observed_generation,
                declaration_generation=declaration_generation_or_none(obj),
                serial_number=status.serial_number,
                not_after=status.not_after,
            ),
        )

    def declaration_refused(self, desired: DesiredObject, error: str) -> StatusChanged:
        """FAILED for a declaration this cluster cannot hold (no object, so no status)."""
        return StatusChanged(
            source=self.source,
            cluster=self.cluster,
            issuance=derived_issuance(desired.uid, desired.generation),
            data=StatusChangedData(
                name=desired.name,
                namespace=desired.namespace,
                state=CertificateState.FAILED,
                error=error[:ERROR_LIMIT],
                observed_generation=0,
                declaration_generation=desired.generation,
            ),
        )
