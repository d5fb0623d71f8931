"""The status mirror's decision: how an agent's `status.changed` lands on the declaration.

`mirrored_status(current, change, issuance)` is pure. It copies state, error, the declaration
generation the agent has processed (as `observedGeneration`, which on the management object
counts the *declaration's* generations), notAfter, serial and issuance id, with three guards,
because status reports are handled concurrently and may arrive out of order:

- a report about an older declaration generation than the one already mirrored is ignored;
- for the same issuance, a report of an earlier step (REQUESTED after FINISHED) is ignored;
- a FAILED written by the issuer itself (error starting with `ISSUER_ERROR_PREFIX`: the signing
  Secret is missing or invalid) stands until the issuer clears it; an agent's report cannot hide
  a problem only the management cluster's operator can fix.

notAfter and serial of a report that has none (a new issuance still REQUESTED) keep the values
of the certificate the cluster still holds.

`announced(before, after)` says which mirrored changes are recorded as Events on the declaration:
reaching FINISHED (the issuance is complete) or FAILED, once per state and issuance (a new
issuance reaching FINISHED again is announced again). The steps in between are Events in the
cluster itself (the agent records each); on the management cluster they cost two API requests
per issuance that nobody acts on there.

`cleared_status(current, now)` is what the issuer writes when its own failure is resolved: the
agent's last state is not kept underneath, so it infers: FINISHED while the last mirrored
certificate (serial, notAfter) is still valid, PENDING otherwise; the agent's next report
corrects either.
"""

from __future__ import annotations

from datetime import datetime

from shared.api.v1alpha2 import IssuedCertificateStatus, State
from shared.events import CertificateState, StatusChangedData

ISSUER_ERROR_PREFIX = "issuer: "
"""Marks `status.error` written by the issuer, not mirrored from an agent."""

_PROGRESS = {
    CertificateState.PENDING: 0,
    CertificateState.REQUESTED: 1,
    CertificateState.ISSUED: 2,
    CertificateState.FINISHED: 3,
}


def issuer_failed(status: IssuedCertificateStatus) -> bool:
    return status.state == State.FAILED and status.error.startswith(ISSUER_ERROR_PREFIX)


def mirrored_status(
    current: IssuedCertificateStatus, change: StatusChangedData, *, issuance: str
) -> IssuedCertificateStatus:
    """The status to write; `current` itself when the report changes nothing or is stale."""
    if issuer_failed(current):
        return current
    generation = change.declaration_generation
    if generation is not None and generation < current.observed_generation:
        return current
    if (
        current.issuance_id == issuance
        and change.state in _PROGRESS
        and current.state.value in _PROGRESS
        and _PROGRESS[change.state] < _PROGRESS[CertificateState(current.state.value)]
    ):
        return current
    return current.model_copy(
        update={
            "state": State(change.state.value),
            "error": change.error or "",
            "observed_generation": generation
            if generation is not None
            else current.observed_generation,
            "not_after": change.not_after or current.not_after,
            "serial_number": change.serial_number or current.serial_number,
            "issuance_id": issuance,
        }
    )


ANNOUNCED_STATES = frozenset({State.FINISHED, State.FAILED})
"""The mirrored states that are recorded as Events on the management declaration."""


def announced(before: IssuedCertificateStatus | None, after: IssuedCertificateStatus) -> bool:
    """Whether the mirrored change from `before` (None: unreadable) to `after` is an Event."""
    if after.state not in ANNOUNCED_STATES:
        return False
    return before is None or before.state != after.state or before.issuance_id != after.issuance_id


def cleared_status(current: IssuedCertificateStatus, *, now: datetime) -> IssuedCertificateStatus:
    """The status once the issuer's own failure is resolved (`current` if it is not one)."""
    if not issuer_failed(current):
        return current
    holds = current.serial_number is not None and (
        current.not_after is not None and current.not_after > now
    )
    return current.model_copy(
        update={"state": State.FINISHED if holds else State.PENDING, "error": ""}
    )
