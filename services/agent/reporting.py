"""The agent's report: its cluster's IssuedCertificates, written at a fixed interval.

Every `report_interval` seconds, changed or not, the agent writes one `ClusterReport`
(`shared.events.reports`) to its own key of the KV bucket `meshtrust-reports`: per
IssuedCertificate, its state, notAfter, renewalTime and declaration generation, and the time
of the report. The issuer reads it as the cluster's heartbeat (docs/issuer.md, "Liveness"):
a cluster that stops reporting is flagged on its declarations in the management cluster, and
its certificates' expiry stays known there while it is silent.

A report that cannot be written is logged and tried again at the next interval: reporting
never stops the agent. Deliberately not here: what the issuer concludes (the issuer's).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from pydantic import ValidationError

from services.agent.objects import declaration_generation_or_none
from shared.api.meta import Obj, metadata
from shared.api.v1alpha2 import IssuedCertificateStatus
from shared.bus import Bucket, Bus
from shared.events import CertificateState
from shared.events.reports import (
    MAX_REPORTED,
    REPORTS_BUCKET,
    REPORTS_DESCRIPTION,
    ClusterReport,
    ReportedCertificate,
)
from shared.k8s.informer import Informer
from shared.runtime import TransientError, get_logger
from shared.runtime.clock import Clock, utcnow

__all__ = ["Reporter", "cluster_report"]

log = get_logger(__name__)


def cluster_report(
    objects: Iterable[Obj], *, cluster: str, source: str, interval: float, clock: Clock = utcnow
) -> ClusterReport:
    """The report of `objects` (the cluster's IssuedCertificates, as the informer holds them)."""
    certificates = [c for c in map(_reported, objects) if c is not None]
    certificates.sort(key=lambda c: (c.namespace, c.name))
    return ClusterReport(
        cluster=cluster,
        source=source,
        time=clock(),
        interval=interval,
        certificates=tuple(certificates[:MAX_REPORTED]),
    )


def _reported(obj: Obj) -> ReportedCertificate | None:
    meta = metadata(obj)
    try:
        status = IssuedCertificateStatus.model_validate(obj.get("status") or {})
        return ReportedCertificate(
            name=str(meta.get("name") or ""),
            namespace=str(meta.get("namespace") or ""),
            state=CertificateState(status.state.value),
            generation=declaration_generation_or_none(obj),
            not_after=status.not_after,
            renewal_time=status.renewal_time,
            error=status.error[:4096],
        )
    except (ValidationError, ValueError):
        log.info("IssuedCertificate left out of the report: unreadable", name=meta.get("name"))
        return None


class Reporter:
    """Writes this cluster's report; `report()` is the periodic component's work."""

    def __init__(
        self,
        bus: Bus,
        informers: Sequence[Informer],
        *,
        cluster: str,
        source: str,
        interval: float,
        clock: Clock = utcnow,
    ) -> None:
        self._bus = bus
        self._informers = tuple(informers)
        self._cluster = cluster
        self._source = source
        self._interval = interval
        self._clock = clock
        self._bucket: Bucket | None = None
        self.written = 0
        """Reports written since the start (tests wait on it)."""

    async def report(self) -> None:
        value = cluster_report(
            (obj for informer in self._informers for obj in informer.items()),
            cluster=self._cluster,
            source=self._source,
            interval=self._interval,
            clock=self._clock,
        ).encode()
        try:
            if self._bucket is None:
                self._bucket = await self._bus.bucket(
                    REPORTS_BUCKET, description=REPORTS_DESCRIPTION, history=1
                )
            await self._bucket.put(self._cluster, value)
        except TransientError as exc:
            log.warning("report not written; trying again next interval", error=str(exc))
            return
        except Exception as exc:  # opening the bucket while NATS is away: never stop the agent
            log.warning("reports bucket not opened; next interval", error=type(exc).__name__)
            return
        self.written += 1
        log.debug("report written", cluster=self._cluster)
