"""The wire contract: one frozen pydantic model per event, each inside the same envelope.

An event on the bus is a JSON object:

    {"schema_version": 1, "id": "...", "type": "csr.requested", "source": "agent/east",
     "cluster": "east", "time": "...", "issuance": "...", "trace": {...}, "data": {...}}

`type` selects the model of `data`. Every model forbids unknown fields, so a message from a newer
producer with an unknown field is refused loudly rather than half-understood; adding a field is a
new `schema_version`. `cluster` must equal the cluster token of the subject the message came on
(checked by the codec), and is the cluster the event is *about*: the issuer answers on the
agent's cluster subject, so that cluster's agent finds its answers under its own prefix.

Private keys never appear here: only CSRs and certificates travel.
"""

from __future__ import annotations

import uuid
from typing import Annotated, ClassVar, Literal

from pydantic import AwareDatetime, Field, StringConstraints

from shared.events.enums import CertificateState, EventType
from shared.events.names import ClusterName, IssuanceId, NamespaceName, ObjectName
from shared.events.wire import OmitsUnset, TrustEpoch
from shared.events.wire import WireModel as _Model
from shared.runtime.clock import utcnow

SCHEMA_VERSION = 1
MAX_PEM_CHARS = 64 * 1024
"""A CSR or certificate chain larger than this is not something we produce or accept."""

Pem = Annotated[str, StringConstraints(min_length=1, max_length=MAX_PEM_CHARS)]
Reason = Annotated[str, StringConstraints(pattern=r"^[A-Za-z][A-Za-z0-9]{0,63}$")]
"""A stable, CamelCase, machine-readable reason code, as Kubernetes condition reasons are."""
Message = Annotated[str, StringConstraints(max_length=4096)]
Serial = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{1,64}$")]
"""A certificate serial number in lower-case hex."""


class TraceContext(_Model):
    """W3C Trace Context, carried so that one issuance can be followed across the services."""

    traceparent: Annotated[
        str, StringConstraints(pattern=r"^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$")
    ]
    tracestate: Annotated[str, StringConstraints(max_length=512)] | None = None


class ObjectRef(_Model):
    """A namespaced Kubernetes object in the cluster the event is about."""

    namespace: NamespaceName
    name: ObjectName


# --- payloads ---------------------------------------------------------------------------------


class CsrRequestedData(OmitsUnset):
    """The agent asks for its CSR to be signed."""

    _omitted_when_none: ClassVar[tuple[str, ...]] = ("trust_epoch",)

    name: ObjectName = Field(description="The IssuedCertificate's name (= the declaration's).")
    declaration_uid: str = Field(min_length=1, max_length=64)
    declaration_generation: int = Field(ge=1, description="The declaration this CSR answers.")
    csr_pem: Pem
    attempt: int = Field(default=1, ge=1, description="1 for the first send, +1 per re-send.")
    trust_epoch: TrustEpoch | None = Field(
        default=None,
        description="The rotation step this CSR was made for (the desired IssuedCertificate's "
        "`meshtrust.io/trust-epoch`); absent outside a rotation.",
    )


class CertificateIssuedData(OmitsUnset):
    """The issuer's signed intermediate, with the chain to the root; no key, ever."""

    _omitted_when_none: ClassVar[tuple[str, ...]] = ("cross_signed_pem",)

    name: ObjectName
    declaration_generation: int = Field(ge=1)
    attempt: int = Field(ge=1, description="The csr.requested attempt this answers.")
    serial_number: Serial
    certificate_pem: Pem = Field(description="The issued intermediate CA certificate.")
    ca_chain_pem: Pem = Field(
        description="The signing CA's certificate and every certificate above it, root last."
    )
    root_cert_pem: Pem = Field(
        description="The roots the cluster's workloads trust (Istio's root-cert.pem): the root "
        "`ca_chain_pem` ends at, and during a root rotation the other root as well."
    )
    not_before: AwareDatetime
    not_after: AwareDatetime
    cross_signed_pem: Pem | None = Field(
        default=None,
        description="During and after a root rotation: for each root of `root_cert_pem` that "
        "the agent may not pin yet, a certificate of that root's subject and key signed by a "
        "root it does pin (the authority to trust it); absent otherwise.",
    )


class CertificateDeniedData(OmitsUnset):
    """The issuer refuses; `reason` is stable, `message` tells an operator what to fix."""

    _omitted_when_none: ClassVar[tuple[str, ...]] = ("retry_after",)

    name: ObjectName
    declaration_generation: int | None = Field(default=None, ge=1)
    attempt: int = Field(ge=1)
    reason: Reason
    message: Message
    retry_after: AwareDatetime | None = Field(
        default=None,
        description="Set with reason RateLimited: send the CSR again at or after this time, "
        "not before. Absent from the JSON when not set, so that a denial without it reads as "
        "it did before the field existed (schema_version 1).",
    )


class BounceRequestedData(_Model):
    """The agent asks its cluster's bouncer to restart the pods of a PodBounceDirective."""

    directive: ObjectRef
    issued_certificate: ObjectRef


class BouncedSelector(_Model):
    index: int = Field(ge=0, description="Position of the selector in spec.podsToBounce.")
    pods: tuple[str, ...] = Field(description="Names of the pods deleted (or rolled).")


class BounceCompletedData(_Model):
    directive: ObjectRef
    issued_certificate: ObjectRef
    selectors: tuple[BouncedSelector, ...] = ()
    error: Message | None = Field(default=None, description="Set when the bounce did not finish.")


class StatusChangedData(_Model):
    """The agent's view of an IssuedCertificate, mirrored by the issuer onto the declaration."""

    name: ObjectName
    namespace: NamespaceName = Field(description="Where the IssuedCertificate is, remotely.")
    state: CertificateState
    error: Message | None = None
    observed_generation: int = Field(ge=0, description="Remote object's observedGeneration.")
    declaration_generation: int | None = Field(default=None, ge=1)
    serial_number: Serial | None = None
    not_after: AwareDatetime | None = None


# --- envelope ---------------------------------------------------------------------------------


class Envelope(_Model):
    """What every event shares. Subclasses pin `type` and the model of `data`."""

    schema_version: Literal[1] = 1
    id: uuid.UUID = Field(default_factory=uuid.uuid4, description="Unique per event.")
    source: Annotated[str, StringConstraints(pattern=r"^[a-z]+/[a-z0-9.-]{1,253}$")] = Field(
        description="Producer: '<service>/<instance>', e.g. 'agent/east'."
    )
    cluster: ClusterName = Field(description="The cluster the event is about (subject token).")
    time: AwareDatetime = Field(default_factory=utcnow)
    issuance: IssuanceId
    trace: TraceContext | None = None

    event_type: ClassVar[EventType]

    def dedupe_key(self) -> str:
        """The `Nats-Msg-Id`: equal for re-publishes of the same logical event.

        Derived from the issuance, so that an agent restarted mid-publish, or a retried publish
        after a timeout, is deduplicated by JetStream within the stream's duplicate window.
        """
        return f"{self.issuance}:{self.event_type.value}"


class CsrRequested(Envelope):
    type: Literal[EventType.CSR_REQUESTED] = EventType.CSR_REQUESTED
    data: CsrRequestedData
    event_type: ClassVar[EventType] = EventType.CSR_REQUESTED

    def dedupe_key(self) -> str:
        # A timed re-send is a new attempt and must reach the issuer; a restart's re-publish of
        # the same attempt is not.
        return f"{super().dedupe_key()}:{self.data.attempt}"


class CertificateIssued(Envelope):
    type: Literal[EventType.CERTIFICATE_ISSUED] = EventType.CERTIFICATE_ISSUED
    data: CertificateIssuedData
    event_type: ClassVar[EventType] = EventType.CERTIFICATE_ISSUED

    def dedupe_key(self) -> str:
        return f"{super().dedupe_key()}:{self.data.attempt}"


class CertificateDenied(Envelope):
    type: Literal[EventType.CERTIFICATE_DENIED] = EventType.CERTIFICATE_DENIED
    data: CertificateDeniedData
    event_type: ClassVar[EventType] = EventType.CERTIFICATE_DENIED

    def dedupe_key(self) -> str:
        return f"{super().dedupe_key()}:{self.data.attempt}"


class BounceRequested(Envelope):
    type: Literal[EventType.BOUNCE_REQUESTED] = EventType.BOUNCE_REQUESTED
    data: BounceRequestedData
    event_type: ClassVar[EventType] = EventType.BOUNCE_REQUESTED

    def dedupe_key(self) -> str:
        # A bounce may be asked again for one issuance (after a failed one); the bouncer is
        # exactly-once per issuance itself. Retries of one publish share the event id.
        return f"{super().dedupe_key()}:{self.id}"


class BounceCompleted(Envelope):
    type: Literal[EventType.BOUNCE_COMPLETED] = EventType.BOUNCE_COMPLETED
    data: BounceCompletedData
    event_type: ClassVar[EventType] = EventType.BOUNCE_COMPLETED

    def dedupe_key(self) -> str:
        # Each answer counts: a failed bounce's answer must not swallow a later success's.
        return f"{super().dedupe_key()}:{self.id}"


class StatusChanged(Envelope):
    type: Literal[EventType.STATUS_CHANGED] = EventType.STATUS_CHANGED
    data: StatusChangedData
    event_type: ClassVar[EventType] = EventType.STATUS_CHANGED

    def dedupe_key(self) -> str:
        # One issuance passes through several states; each change is its own fact. Retries of
        # one publish share the event id.
        return f"{super().dedupe_key()}:{self.id}"


Event = Annotated[
    CsrRequested
    | CertificateIssued
    | CertificateDenied
    | BounceRequested
    | BounceCompleted
    | StatusChanged,
    Field(discriminator="type"),
]
"""Any event; pydantic picks the model by `type`."""

EVENT_MODELS: dict[EventType, type[Envelope]] = {
    model.event_type: model
    for model in (
        CsrRequested,
        CertificateIssued,
        CertificateDenied,
        BounceRequested,
        BounceCompleted,
        StatusChanged,
    )
}
