"""The rotation plan: given a CertificateRotation and its clusters' progress, what to do now.

Pure (no bus, no Kubernetes, no asyncio, the clock is a parameter): `plan(...)` returns the new
status, the clusters to move to a new step (the application republishes their declarations with
the step's trust epoch) and when to look again. The state machine (docs/rotation.md):

    Pending -> AddingNewRoot -> PropagatingNewIntermediate -> WaitingGracePeriod
            -> DeletingOldRoot -> Succeeded
    Pending -> Reissuing -> Succeeded                      (intermediate-only: same root)
    abort before DeletingOldRoot -> RollingBack (move -> back, then every step -> undo)
            -> RolledBack

Within a phase the clusters go in waves: the canary alone first, then at most `waveSize` at a
time, the next wave only when the previous one is done. A cluster fails (its declaration
FAILED, or not done within `step_timeout`): the rotation pauses with its reason and moves no
one else until it is done. Between phases: `pauseBetweenPhases` after the last cluster finished,
with Manual approval `status.awaitingApproval` until `spec.approvedPhase` names the next phase,
and before DeletingOldRoot the grace period.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from services.issuer.policies import RegistrationState, ca_not_registered
from shared.api import reasons
from shared.api.rotations import (
    CertificateRotation,
    CertificateRotationStatus,
    ClusterProgress,
    Phase,
    Step,
)
from shared.controller.policy import Finding

__all__ = [
    "DONE",
    "ENDED",
    "FAILED",
    "IN_PROGRESS",
    "PENDING",
    "ClusterView",
    "Plan",
    "new_ca_refused",
    "plan",
    "signing_step",
    "trust_split",
]

PENDING, IN_PROGRESS, DONE, FAILED = "Pending", "InProgress", "Done", "Failed"
ABORT_REFUSED = (
    "abort refused: DeletingOldRoot has started and the old root is being removed; finish the "
    "rotation (docs/rotation.md, 'Rolling back')"
)

PHASE_STEP: Mapping[Phase, Step] = {
    Phase.ADDING_NEW_ROOT: Step.ADD,
    Phase.PROPAGATING_NEW_INTERMEDIATE: Step.MOVE,
    Phase.DELETING_OLD_ROOT: Step.DROP,
    Phase.REISSUING: Step.REISSUE,
}
_NEXT: Mapping[Phase, Phase] = {
    Phase.ADDING_NEW_ROOT: Phase.PROPAGATING_NEW_INTERMEDIATE,
    Phase.PROPAGATING_NEW_INTERMEDIATE: Phase.WAITING_GRACE_PERIOD,
    Phase.WAITING_GRACE_PERIOD: Phase.DELETING_OLD_ROOT,
    Phase.DELETING_OLD_ROOT: Phase.SUCCEEDED,
    Phase.REISSUING: Phase.SUCCEEDED,
}
_ABORTABLE = frozenset(
    {
        Phase.PENDING,
        Phase.ADDING_NEW_ROOT,
        Phase.PROPAGATING_NEW_INTERMEDIATE,
        Phase.WAITING_GRACE_PERIOD,
        Phase.REISSUING,
    }
)
_FINAL = frozenset({Phase.SUCCEEDED, Phase.ROLLED_BACK, Phase.FAILED})
ENDED = _FINAL
"""The phases a rotation ends in (nothing more is planned)."""


@dataclass(frozen=True, slots=True)
class ClusterView:
    """What the issuer sees of one cluster on its current step (from its records and the
    mirrored statuses): every declaration signed for the step's epoch and FINISHED with that
    serial (`done`), or why not (`failed`)."""

    done: bool = False
    failed: str | None = None
    serial: str | None = None


@dataclass(frozen=True, slots=True)
class Plan:
    status: CertificateRotationStatus
    moves: Mapping[str, Step] = field(default_factory=dict)
    """Clusters put on a new step now: republish their declarations with its epoch."""
    requeue_at: datetime | None = None
    """Look again then even if nothing changes (a pause, the grace period, a step timeout)."""


def signing_step(rotation: CertificateRotation, cluster: str) -> Step | None:
    """The step the issuer signs for `cluster` now: its step in the status; after Succeeded,
    `drop` for every cluster (new CA, new root, cross certificate), or, when the rotation was
    narrowed (`clusters`, `clusterSelector`), for its members only (those in the status: a
    cluster outside it was never moved and stays on the old CA); after RolledBack, `undo` for
    those that moved (signed as without a rotation, and the epoch kept: clearing it would
    re-issue once more); None: not rotating."""
    listed = next((p for p in rotation.status.clusters if p.name == cluster), None)
    if rotation.status.phase is Phase.SUCCEEDED and (
        listed is not None or not rotation.spec.narrowed
    ):
        return Step.DROP if not _intermediate_only(rotation.status) else Step.REISSUE
    return listed.step if listed is not None else None


def trust_split(
    rotation: CertificateRotation,
    naming: Collection[str],
    members: Collection[str],
    *,
    intermediate_only: bool,
) -> Finding | None:
    """Why a root rotation must not go on: clusters that name its Secret (`naming`) but are not
    among its `members` would keep only the old root, and stop trusting the rotated clusters'
    workloads once these move (and theirs, once these drop it). None: nothing splits, the
    rotation changes no root, it is ending or rolling back, or `allowTrustSplit` says so."""
    spec, phase = rotation.spec, rotation.status.phase
    if intermediate_only or spec.allow_trust_split or spec.abort:
        return None
    if phase in ENDED or phase is Phase.ROLLING_BACK:
        return None
    outside = sorted(set(naming) - set(members))
    if not outside:
        return None
    more = f" and {len(outside) - 10} more" if len(outside) > 10 else ""
    shown = ", ".join(outside[:10]) + more
    ref = spec.signing_certificate_secret
    return Finding(
        reasons.TRUST_SPLIT,
        f"{shown} name {ref.namespace}/{ref.name} too but are outside this root rotation: they "
        "would keep only the old root and stop trusting the rotated clusters' workloads; take "
        "them in (spec.clusters, spec.clusterSelector), point them at another Secret, or set "
        "spec.allowTrustSplit: true (docs/rotation.md, 'Which clusters')",
    )


def new_ca_refused(
    rotation: CertificateRotation, registrations: Mapping[str, RegistrationState]
) -> Finding | None:
    """Why the rotation must not move its clusters: some member's ClusterRegistration
    (`registrations`, by cluster) does not allow the new CA's Secret, so its CSRs on the steps
    signed by the new CA would be denied. None: every member may be, or the rotation is ending,
    rolling back or aborted (the way back signs with the old CA)."""
    spec, phase = rotation.spec, rotation.status.phase
    if spec.abort or phase in ENDED or phase is Phase.ROLLING_BACK:
        return None
    new, what = spec.new_signing_certificate_secret, "the rotation's new CA Secret"
    found = {c: ca_not_registered(state, new, what=what) for c, state in registrations.items()}
    refused = {c: f for c, f in sorted(found.items()) if f is not None}
    if not refused:
        return None
    first = next(iter(refused.values()))
    return Finding(
        first.reason,
        f"{', '.join(refused)}: {first.message}; allow it in their ClusterRegistrations' "
        "signingCertificateSecrets, or take them out of the rotation",
    )


def _intermediate_only(status: CertificateRotationStatus) -> bool:
    return status.old_root_fingerprint == status.new_root_fingerprint


def plan(
    rotation: CertificateRotation,
    clusters: Mapping[str, ClusterView],
    *,
    intermediate_only: bool,
    now: datetime,
    step_timeout: timedelta,
) -> Plan:
    """What to do now for `rotation` over `clusters` (every cluster it covers)."""
    # Paused and error are decided afresh each time: a cluster that recovered, or a CA that
    # can be used again, clears them.
    status = rotation.status.model_copy(
        update={
            "observed_generation": rotation.metadata.generation or 0,
            "paused": False,
            "error": None,
        }
    )
    if status.phase in _FINAL:
        return Plan(status)
    if status.start_time is None:
        status = status.model_copy(update={"start_time": now})
    lines = _progress(
        status, clusters, canary=rotation.spec.canary, now=now, step_timeout=step_timeout
    )
    status = status.model_copy(update={"clusters": tuple(lines)})
    if (rotation.spec.abort and status.phase in _ABORTABLE) or status.phase is Phase.ROLLING_BACK:
        return _roll_back(rotation, status, now=now, step_timeout=step_timeout)
    if status.phase is Phase.PENDING:
        first = Phase.REISSUING if intermediate_only else Phase.ADDING_NEW_ROOT
        status = _enter(status, first, now)
    out = _run_phase(rotation, status, now=now, step_timeout=step_timeout)
    if rotation.spec.abort and out.status.error is None:
        refused = out.status.model_copy(update={"error": ABORT_REFUSED})
        return Plan(refused, moves=out.moves, requeue_at=out.requeue_at)
    return out


def _progress(
    status: CertificateRotationStatus,
    clusters: Mapping[str, ClusterView],
    *,
    canary: str | None,
    now: datetime,
    step_timeout: timedelta,
) -> list[ClusterProgress]:
    """Every cluster's line, the canary first, then by name, its state from what is seen."""
    known = {p.name: p for p in status.clusters}
    order = sorted(clusters, key=lambda name: (name != canary, name))
    out = []
    for name in order:
        line = known.get(name) or ClusterProgress(name=name, state=PENDING)
        if line.step is not None:
            line = _observe(line, clusters[name], now=now, step_timeout=step_timeout)
        out.append(line)
    return out


def _observe(
    line: ClusterProgress, view: ClusterView, *, now: datetime, step_timeout: timedelta
) -> ClusterProgress:
    if view.done:
        state, error = DONE, None
    elif view.failed is not None:
        state, error = FAILED, view.failed
    elif line.state == IN_PROGRESS and line.since is not None and now >= line.since + step_timeout:
        state, error = FAILED, f"step {line.step} not done within {step_timeout}"
    else:
        state, error = IN_PROGRESS, None
    since = line.since if state == line.state and line.since is not None else now
    return line.model_copy(
        update={"state": state, "error": error, "since": since, "serial_number": view.serial}
    )


def _enter(
    status: CertificateRotationStatus, phase: Phase, now: datetime
) -> CertificateRotationStatus:
    done = {"completion_time": now} if phase in _FINAL else {}
    return status.model_copy(
        update={"phase": phase, "phase_start_time": now, "awaiting_approval": None, **done}
    )


def _waves(
    rotation: CertificateRotation,
    status: CertificateRotationStatus,
    step: Step,
    members: Sequence[str],
    *,
    now: datetime,
    step_timeout: timedelta,
) -> Plan | None:
    """Move `members` (in order) to `step` in waves; None once every one of them is done."""
    lines = [p for p in status.clusters if p.name in members]
    failed = [p for p in lines if p.step is step and p.state == FAILED]
    if failed:
        why = "; ".join(f"cluster {p.name}: {p.error}" for p in failed)
        return Plan(status.model_copy(update={"paused": True, "error": why}))
    status = status.model_copy(update={"paused": False, "error": None})
    in_flight = [p for p in lines if p.step is step and p.state != DONE]
    if in_flight:
        due = min((p.since or now) + step_timeout for p in in_flight)
        return Plan(status, requeue_at=due)
    todo = [p.name for p in lines if p.step is not step]
    if not todo:
        return None
    # A cluster still on another step (an abort caught its move in flight) is bouncing: it
    # holds a place in the wave, and is the first moved (that adds no cluster bouncing).
    busy = [p.name for p in status.clusters if p.step is not step and p.state == IN_PROGRESS]
    if busy:
        free = max(0, rotation.spec.wave_size - len(busy))
        wave = [n for n in todo if n in busy] + [n for n in todo if n not in busy][:free]
    elif todo[0] == rotation.spec.canary:
        wave = todo[:1]
    else:
        wave = todo[: rotation.spec.wave_size]
    moved = ClusterProgress(step=step, state=IN_PROGRESS, since=now, name="")
    clusters = tuple(
        moved.model_copy(update={"name": p.name}) if p.name in wave else p for p in status.clusters
    )
    status = status.model_copy(update={"clusters": clusters})
    return Plan(status, moves=dict.fromkeys(wave, step), requeue_at=now + step_timeout)


def _run_phase(
    rotation: CertificateRotation,
    status: CertificateRotationStatus,
    *,
    now: datetime,
    step_timeout: timedelta,
) -> Plan:
    if status.phase is Phase.WAITING_GRACE_PERIOD:
        return _after_phase(rotation, status, now=now, step_timeout=step_timeout)
    members = [p.name for p in status.clusters]
    step = PHASE_STEP[status.phase]
    waves = _waves(rotation, status, step, members, now=now, step_timeout=step_timeout)
    return waves or _after_phase(rotation, status, now=now, step_timeout=step_timeout)


def _after_phase(
    rotation: CertificateRotation,
    status: CertificateRotationStatus,
    *,
    now: datetime,
    step_timeout: timedelta,
) -> Plan:
    """The phase is done: enter the next one when its gates open (pause, grace, approval)."""
    following = _NEXT[status.phase]
    if status.phase is Phase.PROPAGATING_NEW_INTERMEDIATE:
        status = _enter(status, following, now)  # the grace period starts now, ungated
        return _after_phase(rotation, status, now=now, step_timeout=step_timeout)
    if status.phase is Phase.WAITING_GRACE_PERIOD:
        started = status.phase_start_time or now
        ready = started + max(rotation.spec.grace, rotation.spec.pause)
    else:
        ready = _finished(status, now) + rotation.spec.pause
    if following is Phase.SUCCEEDED:
        return Plan(_enter(status, following, now))
    manual = rotation.spec.approval == "Manual"
    if manual and rotation.spec.approved_phase != following.value:
        return Plan(status.model_copy(update={"awaiting_approval": following.value}))
    if now < ready:
        return Plan(status.model_copy(update={"awaiting_approval": None}), requeue_at=ready)
    status = _enter(status, following, now)
    return _run_phase(rotation, status, now=now, step_timeout=step_timeout)


def _finished(status: CertificateRotationStatus, now: datetime) -> datetime:
    """When the last cluster finished the phase."""
    return max((p.since for p in status.clusters if p.since is not None), default=now)


def _roll_back(
    rotation: CertificateRotation,
    status: CertificateRotationStatus,
    *,
    now: datetime,
    step_timeout: timedelta,
) -> Plan:
    """Every cluster on the new CA back to the old one (`back`), then, after the grace period,
    all to `undo`."""
    if status.phase is not Phase.ROLLING_BACK:
        status = _enter(status, Phase.ROLLING_BACK, now).model_copy(update={"error": None})
    on_new = [p.name for p in status.clusters if p.step in (Step.MOVE, Step.BACK)]
    if any(
        p.step is Step.MOVE or (p.step is Step.BACK and p.state != DONE) for p in status.clusters
    ):
        waves = _waves(rotation, status, Step.BACK, on_new, now=now, step_timeout=step_timeout)
        if waves is not None:
            return waves
    backs = [p.since for p in status.clusters if p.step is Step.BACK and p.since is not None]
    if backs and now < max(backs) + rotation.spec.grace:
        # Workload certificates from a new-CA intermediate must have been renewed under the old
        # one before any cluster stops trusting the new root: the same grace as going forward.
        return Plan(status, requeue_at=max(backs) + rotation.spec.grace)
    touched = [p.name for p in status.clusters if p.step is not None]
    waves = _waves(rotation, status, Step.UNDO, touched, now=now, step_timeout=step_timeout)
    return waves or Plan(_enter(status, Phase.ROLLED_BACK, now))
