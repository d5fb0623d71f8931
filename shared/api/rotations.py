"""`CertificateRotation`: moving a fleet from one signing CA (and root) to another, in phases.

A CertificateRotation lives in the issuer's registration namespace (`meshtrust-system`). It names
the Secret the declarations use now (`signingCertificateSecret`) and the new CA
(`newSigningCertificateSecret`); the issuer's rotation controller (`services.issuer.rotating`)
moves each cluster through the steps of docs/rotation.md, in waves, and writes the progress in
the status. This module is the wire format only (camelCase, frozen, unknown spec fields refused,
as `shared.api.v1alpha2`) and the vocabulary of phases and steps; it does no I/O.
"""

from __future__ import annotations

import enum
from datetime import datetime, timedelta
from typing import ClassVar, Literal

from pydantic import Field, field_validator

from shared.api.durations import parse_duration
from shared.api.selectors import LabelSelector
from shared.api.v1alpha2 import API_VERSION, ObjectMeta, ObjectRef, _Object, _Wire

__all__ = [
    "KIND",
    "PLURAL",
    "CertificateRotation",
    "CertificateRotationSpec",
    "CertificateRotationStatus",
    "ClusterProgress",
    "Phase",
    "Step",
    "epoch_of",
    "parse_epoch",
]

KIND = "CertificateRotation"
PLURAL = "certificaterotations"


class Phase(enum.StrEnum):
    """`status.phase`. Reissuing is the one phase of an intermediate-only rotation."""

    PENDING = "Pending"
    ADDING_NEW_ROOT = "AddingNewRoot"
    PROPAGATING_NEW_INTERMEDIATE = "PropagatingNewIntermediate"
    WAITING_GRACE_PERIOD = "WaitingGracePeriod"
    DELETING_OLD_ROOT = "DeletingOldRoot"
    REISSUING = "Reissuing"
    SUCCEEDED = "Succeeded"
    ROLLING_BACK = "RollingBack"
    ROLLED_BACK = "RolledBack"
    FAILED = "Failed"


class Step(enum.StrEnum):
    """Where one cluster is: what the issuer signs for it (docs/rotation.md, "Steps")."""

    ADD = "add"
    MOVE = "move"
    DROP = "drop"
    BACK = "back"
    UNDO = "undo"
    REISSUE = "reissue"


def epoch_of(name: str, uid: str, step: Step) -> str:
    """The trust epoch of `step` of the rotation `name` (uid `uid`): `<name>.<uid8>.<step>`."""
    return f"{name}.{uid.replace('-', '')[:8]}.{step.value}"


def parse_epoch(epoch: str) -> tuple[str, str, Step] | None:
    """(rotation name, uid prefix, step) of a trust epoch, or None when it is not one."""
    name, dot, rest = epoch.rpartition(".")
    head, _, uid8 = name.rpartition(".")
    if not dot or not head or len(uid8) != 8:
        return None
    try:
        return head, uid8, Step(rest)
    except ValueError:
        return None


class CertificateRotationSpec(_Wire):
    signing_certificate_secret: ObjectRef
    """The Secret the declarations name: the current CA."""
    new_signing_certificate_secret: ObjectRef
    """The CA the clusters move to."""
    clusters: tuple[str, ...] = ()
    """Empty: every cluster with a declaration naming `signingCertificateSecret`."""
    cluster_selector: LabelSelector | None = None
    """Only the clusters whose ClusterRegistration's labels it selects (and that are in
    `clusters`, when both are set); a cluster without a registration is never selected. Absent:
    not used; `{}`: every registered cluster. A cluster moved to a step stays (docs/rotation.md,
    "Which clusters")."""
    wave_size: int = Field(default=1, ge=1)
    canary: str | None = None
    approval: Literal["Automatic", "Manual"] = "Automatic"
    approved_phase: str | None = None
    """With Manual approval: the phase the operator lets start (`status.awaitingApproval`)."""
    pause_between_phases: str = "0s"
    grace_period: str = "24h"
    abort: bool = False
    allow_trust_split: bool = False
    """A narrowed root rotation goes on while clusters outside it name the same Secret (they
    keep only the old root). False: it pauses with TrustSplit (docs/rotation.md)."""

    @field_validator("pause_between_phases", "grace_period")
    @classmethod
    def _duration(cls, value: str) -> str:
        parse_duration(value)
        return value

    @property
    def narrowed(self) -> bool:
        """Whether the rotation covers only some clusters (a list, or a selector)."""
        return bool(self.clusters) or self.cluster_selector is not None

    @property
    def pause(self) -> timedelta:
        return parse_duration(self.pause_between_phases)

    @property
    def grace(self) -> timedelta:
        return parse_duration(self.grace_period)


class ClusterProgress(_Wire):
    """One cluster's line in `status.clusters`."""

    name: str
    step: Step | None = None
    state: str = ""
    """Pending (not moved yet), InProgress, Done, Failed."""
    serial_number: str | None = None
    error: str | None = None
    since: datetime | None = None


class CertificateRotationStatus(_Wire):
    phase: Phase = Phase.PENDING
    paused: bool = False
    error: str | None = None
    awaiting_approval: str | None = None
    clusters: tuple[ClusterProgress, ...] = ()
    observed_generation: int = 0
    start_time: datetime | None = None
    phase_start_time: datetime | None = None
    completion_time: datetime | None = None
    old_root_fingerprint: str | None = None
    new_root_fingerprint: str | None = None


class CertificateRotation(_Object):
    """certificates.smh.solo.io/v1alpha2 CertificateRotation (a meshtrust kind)."""

    KIND: ClassVar[str] = KIND
    PLURAL: ClassVar[str] = PLURAL

    api_version: str = API_VERSION
    kind: Literal["CertificateRotation"] = "CertificateRotation"
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    spec: CertificateRotationSpec
    status: CertificateRotationStatus = Field(default_factory=CertificateRotationStatus)
