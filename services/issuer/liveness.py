"""Liveness, the pure decision: what a declaration's status says about a silent or expired cluster.

The issuer knows of each cluster when it last heard from it (its periodic report, or any
event) and its last report (per IssuedCertificate: state, notAfter, renewalTime). Every
declaration is checked against them (`liveness_flag`):

- the cluster is **silent**: last heard from longer ago than the silence threshold;
- its certificate is **expired**: past its notAfter (the report's, else the mirrored one);
- its renewal is **overdue**: past its renewalTime plus a grace, and not renewed (a renewal
  moves renewalTime forward).

Each holds even while the cluster cannot be reached: the expiry is known from the last report.
A cluster never heard from (no report yet, an agent from before reports) is not called silent.

`checked_status` writes the flag onto `status.error` with the prefix `LIVENESS_PREFIX`, keeping
the mirrored state, and clears a flag of ours once nothing holds any more (the error becomes the
agent's own, from its report). An issuer failure (`mirror.issuer_failed`) stands: only the
issuer clears it. It also records `lastSeenTime`, moved only by at least `resolution`, so that
a fleet that reports every minute does not rewrite every declaration every minute.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from services.issuer.mirror import issuer_failed
from shared.api.v1alpha2 import IssuedCertificateStatus
from shared.events.reports import ReportedCertificate

LIVENESS_PREFIX = "liveness: "
"""Marks `status.error` written by the liveness check (not mirrored from an agent)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Thresholds:
    silence: timedelta
    """Silent past this since last heard from."""
    renewal_grace: timedelta
    """Overdue this long after renewalTime without a renewal."""
    resolution: timedelta
    """lastSeenTime moves by at least this much (or not at all)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Seen:
    """What the issuer knows of one cluster."""

    cluster: str
    heard: datetime | None = None
    """When last heard from (report or event), by the issuer's clock."""
    reported: datetime | None = None
    """The time of its last report, by the agent's clock."""


def _at(when: datetime) -> str:
    return when.isoformat(timespec="seconds").replace("+00:00", "Z")


def liveness_flag(
    seen: Seen,
    status: IssuedCertificateStatus,
    reported: ReportedCertificate | None,
    *,
    now: datetime,
    thresholds: Thresholds,
) -> str:
    """The error to show for one declaration ("" when nothing is wrong)."""
    cluster = seen.cluster
    not_after = (reported.not_after if reported else None) or status.not_after
    renewal = (reported.renewal_time if reported else None) or status.renewal_time
    parts: list[str] = []
    silent = seen.heard is not None and now - seen.heard > thresholds.silence
    if silent:
        assert seen.heard is not None
        last = _at(seen.reported) if seen.reported is not None else "never"
        parts.append(f"cluster {cluster} silent since {_at(seen.heard)} (last report {last})")
    if not_after is not None and now >= not_after:
        parts.append(f"its certificate expired at {_at(not_after)}")
    elif renewal is not None and now > renewal + thresholds.renewal_grace:
        expiry = f", expires {_at(not_after)}" if not_after is not None else ""
        parts.append(f"its certificate was due for renewal at {_at(renewal)}{expiry}")
    if not parts:
        return ""
    action = (
        f"check the agent in {cluster}"
        if silent
        else f"check the agent's errors in {cluster} (its IssuedCertificate's Events)"
    )
    return f"{LIVENESS_PREFIX}{'; '.join(parts)}: {action}"


def checked_status(
    current: IssuedCertificateStatus,
    *,
    flag: str,
    heard: datetime | None,
    reported: ReportedCertificate | None,
    thresholds: Thresholds,
) -> IssuedCertificateStatus:
    """The status to write (`current` itself when nothing changes)."""
    update: dict[str, object] = {}
    if heard is not None and (
        current.last_seen_time is None or heard - current.last_seen_time >= thresholds.resolution
    ):
        update["last_seen_time"] = heard
    renewal = reported.renewal_time if reported is not None else None
    if renewal is not None and renewal != current.renewal_time:
        update["renewal_time"] = renewal
    if not issuer_failed(current):
        if flag and current.error != flag:
            update["error"] = flag
        elif not flag and current.error.startswith(LIVENESS_PREFIX):
            update["error"] = reported.error if reported is not None else ""
    return current.model_copy(update=update) if update else current
