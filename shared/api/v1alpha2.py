"""Pydantic models of our two custom resources, `certificates.smh.solo.io/v1alpha2`.

`IssuedCertificate` carries exactly the fields of Gloo Mesh's API reference (hosts, org, the three
ObjectRefs; status observedGeneration, error, state) plus our additive `spec.certOptions` and the
status fields that make renewal and auditing possible. `PodBounceDirective` is Gloo Mesh's, plus an
optional per-selector `strategy`.

Wire format: camelCase keys, `state` as the enum's *name*, timestamps RFC 3339. Models are frozen;
`spec` and `status` forbid unknown fields (the CRDs' structural schemas prune unknown fields on the
server, so anything extra here is a bug in our own code); `metadata` keeps every field it does not
model, so an object read, changed with `model_copy` and written back loses nothing.

This module does no I/O and knows nothing about the client; `shared.k8s.client` speaks dicts,
and `Model.from_object(dict)` / `model.to_object()` cross between the two. One module per API
version, as Kubernetes' `apis/<group>/<version>`: the version is part of the wire contract.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any, ClassVar, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.alias_generators import to_camel

from shared.api.durations import parse_duration
from shared.api.meta import ObjectKey

__all__ = [
    "API_VERSION",
    "GROUP",
    "VERSION",
    "BounceStrategy",
    "BouncedPodSet",
    "CertOptions",
    "IssuedCertificate",
    "IssuedCertificateSpec",
    "IssuedCertificateStatus",
    "KeyAlgorithm",
    "ObjectMeta",
    "ObjectRef",
    "PodBounceDirective",
    "PodBounceDirectiveSpec",
    "PodBounceDirectiveStatus",
    "PodSelector",
    "RootCertSync",
    "State",
]

GROUP = "certificates.smh.solo.io"
VERSION = "v1alpha2"
API_VERSION = f"{GROUP}/{VERSION}"


class _Wire(BaseModel):
    """Base: frozen, camelCase on the wire, Python names accepted too, unknown keys refused."""

    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        alias_generator=to_camel,
        validate_by_name=True,
        validate_by_alias=True,
        serialize_by_alias=True,
    )

    def to_wire(self) -> dict[str, Any]:
        """JSON-ready dict with camelCase keys and without unset optional fields."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class ObjectRef(_Wire):
    """core.skv2.solo.io.ObjectRef: a reference to an object by name and namespace."""

    name: str = Field(min_length=1)
    namespace: str = Field(min_length=1)


class State(enum.StrEnum):
    """IssuedCertificateStatus.State, written on the wire as the name (proto JSON mapping)."""

    PENDING = "PENDING"
    REQUESTED = "REQUESTED"
    ISSUED = "ISSUED"
    FINISHED = "FINISHED"
    FAILED = "FAILED"


class KeyAlgorithm(enum.StrEnum):
    """Which kind of private key the agent generates."""

    RSA = "RSA"
    ECDSA = "ECDSA"


ALLOWED_KEY_SIZES: Mapping[KeyAlgorithm, tuple[int, ...]] = {
    KeyAlgorithm.RSA: (2048, 3072, 4096),
    KeyAlgorithm.ECDSA: (256, 384),
}
DEFAULT_KEY_SIZES: Mapping[KeyAlgorithm, int] = {KeyAlgorithm.RSA: 4096, KeyAlgorithm.ECDSA: 256}


class CertOptions(_Wire):
    """How the intermediate's key and lifetime are chosen (meshtrust addition)."""

    ttl_days: int = Field(default=365, ge=1, le=3650)
    key_algorithm: KeyAlgorithm = KeyAlgorithm.RSA
    key_size: int = 4096
    secret_rotation_grace_period_ratio: float = Field(default=1 / 3, gt=0, lt=1)
    ttl: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _default_key_size_for_algorithm(cls, data: Any) -> Any:
        # The default key size depends on the algorithm, which a field default cannot express.
        if isinstance(data, Mapping) and data.get("keySize", data.get("key_size")) is None:
            algorithm = data.get("keyAlgorithm", data.get("key_algorithm", KeyAlgorithm.RSA))
            if algorithm in DEFAULT_KEY_SIZES:  # an unknown algorithm is the field's error
                return {**data, "keySize": DEFAULT_KEY_SIZES[KeyAlgorithm(algorithm)]}
        return data

    @model_validator(mode="after")
    def _key_size_fits_algorithm(self) -> Self:
        allowed = ALLOWED_KEY_SIZES[self.key_algorithm]
        if self.key_size not in allowed:
            raise ValueError(
                f"keySize {self.key_size} is not allowed for {self.key_algorithm.value}; "
                f"use one of {', '.join(map(str, allowed))}"
            )
        return self

    @field_validator("ttl")
    @classmethod
    def _ttl_is_a_positive_duration(cls, value: str | None) -> str | None:
        if value is not None and parse_duration(value) <= timedelta(0):
            raise ValueError("ttl must be longer than zero")
        return value

    @property
    def lifetime(self) -> timedelta:
        """The certificate's validity: `ttl` when given, else `ttlDays` days."""
        return parse_duration(self.ttl) if self.ttl is not None else timedelta(days=self.ttl_days)

    def renewal_time(self, not_before: datetime, not_after: datetime) -> datetime:
        """When renewal starts: with `ratio` of the lifetime left (cert-manager renews at 2/3)."""
        return not_after - (not_after - not_before) * self.secret_rotation_grace_period_ratio


class IssuedCertificateSpec(_Wire):
    """What the operator declares (Gloo Mesh fields first, then our `certOptions`)."""

    hosts: tuple[str, ...] = Field(min_length=1)
    org: str = ""
    signing_certificate_secret: ObjectRef
    issued_certificate_secret: ObjectRef
    pod_bounce_directive: ObjectRef | None = None
    cert_options: CertOptions = Field(default_factory=CertOptions)


class IssuedCertificateStatus(_Wire):
    """What the agent reports. A missing status reads as PENDING, the proto zero value."""

    observed_generation: int = 0
    error: str = ""
    state: State = State.PENDING
    not_before: datetime | None = None
    not_after: datetime | None = None
    renewal_time: datetime | None = None
    serial_number: str | None = None
    issuance_id: str | None = None
    failed_attempts: int = Field(default=0, ge=0)
    last_seen_time: datetime | None = None
    """meshtrust addition, on the management declaration only: when the issuer last heard
    from the cluster (docs/issuer.md, "Liveness")."""


class ObjectMeta(_Wire):
    """The parts of ObjectMeta we read; every other field is kept as it came."""

    model_config = ConfigDict(extra="allow")

    name: str = ""
    generate_name: str | None = None
    namespace: str | None = None
    uid: str | None = None
    resource_version: str | None = None
    generation: int | None = None
    creation_timestamp: datetime | None = None
    deletion_timestamp: datetime | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    finalizers: tuple[str, ...] = ()
    owner_references: tuple[dict[str, Any], ...] = ()

    def to_wire(self) -> dict[str, Any]:
        # Empty collections are left out, as the apiserver leaves them out.
        out = super().to_wire()
        for key in ("labels", "annotations", "finalizers", "ownerReferences"):
            if not out.get(key):
                out.pop(key, None)
        return out


class _Object(_Wire):
    """A whole custom resource: apiVersion, kind, metadata, spec, status."""

    KIND: ClassVar[str]
    PLURAL: ClassVar[str]

    api_version: str = API_VERSION
    kind: str
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)

    @classmethod
    def from_object(cls, obj: Mapping[str, Any]) -> Self:
        """Validate a raw object as the API returned it (raises pydantic.ValidationError)."""
        return cls.model_validate(obj)

    def to_object(self) -> dict[str, Any]:
        """The raw object to send to the API."""
        out = self.to_wire()
        out["metadata"] = self.metadata.to_wire()
        return out

    @property
    def key(self) -> ObjectKey:
        """`namespace/name`."""
        return ObjectKey(self.metadata.namespace or "", self.metadata.name)


class IssuedCertificate(_Object):
    """certificates.smh.solo.io/v1alpha2 IssuedCertificate."""

    KIND: ClassVar[str] = "IssuedCertificate"
    PLURAL: ClassVar[str] = "issuedcertificates"

    kind: Literal["IssuedCertificate"] = "IssuedCertificate"
    spec: IssuedCertificateSpec
    status: IssuedCertificateStatus = Field(default_factory=IssuedCertificateStatus)


class BounceStrategy(enum.StrEnum):
    """How a selector's pods are restarted."""

    DELETE = "Delete"
    """Delete the pods; their controller recreates them (Gloo Mesh's behaviour)."""
    ROLLOUT_RESTART = "RolloutRestart"
    """Annotate the owning workload's pod template, as `kubectl rollout restart` does."""


class RootCertSync(_Wire):
    """Wait until the root cert in a Secret has been copied into a ConfigMap (Istio's
    `istio-ca-root-cert`) before bouncing the next selector's pods."""

    secret_ref: ObjectRef
    secret_key: str = Field(min_length=1)
    config_map_ref: ObjectRef
    config_map_key: str = Field(min_length=1)


class PodSelector(_Wire):
    """One group of pods to bounce, in order."""

    namespace: str = Field(min_length=1)
    labels: dict[str, str] = Field(default_factory=dict)
    wait_for_replicas: int = Field(default=0, ge=0)
    root_cert_sync: RootCertSync | None = None
    strategy: BounceStrategy = BounceStrategy.DELETE


class PodBounceDirectiveSpec(_Wire):
    """The ordered list of pod groups to bounce after an issuance."""

    pods_to_bounce: tuple[PodSelector, ...] = ()


class BouncedPodSet(_Wire):
    """The pods bounced for one selector (same index as in `podsToBounce`)."""

    bounced_pods: tuple[str, ...] = ()


class PodBounceDirectiveStatus(_Wire):
    """What the bouncer did, and for which issuance (never twice for one issuance)."""

    pods_bounced: tuple[BouncedPodSet, ...] = ()
    issuance_id: str | None = None


class PodBounceDirective(_Object):
    """certificates.smh.solo.io/v1alpha2 PodBounceDirective."""

    KIND: ClassVar[str] = "PodBounceDirective"
    PLURAL: ClassVar[str] = "podbouncedirectives"

    kind: Literal["PodBounceDirective"] = "PodBounceDirective"
    spec: PodBounceDirectiveSpec = Field(default_factory=PodBounceDirectiveSpec)
    status: PodBounceDirectiveStatus = Field(default_factory=PodBounceDirectiveStatus)
