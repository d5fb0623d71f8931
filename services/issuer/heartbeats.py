"""Liveness, the procedure: each cluster's last-seen time and last report, and the periodic check.

`Heartbeats` keeps, per cluster, when the issuer last heard from it (a report arriving in the
KV bucket `meshtrust-reports`, or any event its consumers handle) and its last report. After a
restart the bucket's snapshot gives every cluster's last report back (the time it was
heard from is then the report's own time, no later than now); several replicas each read the
same bucket.

`check()` (a periodic component) compares every declaration with what is known of its
cluster (`liveness.liveness_flag`, pure) and writes the status `liveness.checked_status`
decides, only when it differs from the declaration's; a conflict is retried on a fresh read
(`update_model_status`). Deliberately not here: the decision (`liveness.py`), the mirror of
`status.changed` (`mirroring.py`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import datetime

from pydantic import ValidationError

from services.issuer.liveness import Seen, Thresholds, checked_status, liveness_flag
from services.issuer.metrics import IssuerMetrics
from services.issuer.settings import IssuerSettings
from shared.api.v1alpha2 import IssuedCertificate, IssuedCertificateStatus
from shared.bus import Bucket, Deleted, Delivery, Handler, KvEntry, Put, Snapshot
from shared.events import Event
from shared.events.reports import ClusterReport, ReportedCertificate
from shared.k8s import KubeClient, KubeError, NotFound, update_model_status
from shared.k8s.informer import Informer
from shared.runtime import TransientError, get_logger
from shared.runtime.clock import Clock, utcnow

__all__ = ["Heartbeats"]

log = get_logger(__name__)


class Heartbeats:
    def __init__(
        self,
        settings: IssuerSettings,
        *,
        kube: KubeClient,
        declarations: Informer,
        metrics: IssuerMetrics | None = None,
        clock: Clock = utcnow,
    ) -> None:
        self._settings = settings
        self._kube = kube
        self._declarations = declarations
        self._metrics = metrics
        self._clock = clock
        self._heard: dict[str, datetime] = {}
        self._reports: dict[str, ClusterReport] = {}
        self.retried = 0
        """Writes that met a conflict (read again, written again)."""
        self.loaded = asyncio.Event()
        """Set once the reports bucket's first snapshot is read."""
        self.thresholds = Thresholds(
            silence=settings.silence_threshold,
            renewal_grace=settings.renewal_grace,
            resolution=settings.last_seen_resolution,
        )
        if metrics is not None:
            metrics.watch_reports(self.reports)

    # -- what is known --------------------------------------------------------------------------

    def reports(self) -> Iterator[ClusterReport]:
        return iter(list(self._reports.values()))

    def seen(self, cluster: str) -> Seen:
        report = self._reports.get(cluster)
        return Seen(
            cluster=cluster,
            heard=self._heard.get(cluster),
            reported=report.time if report is not None else None,
        )

    def noted(self, cluster: str, when: datetime | None = None) -> None:
        """`cluster` was heard from at `when` (now when not given); never moves back."""
        when = when or self._clock()
        last = self._heard.get(cluster)
        if last is None or when > last:
            self._heard[cluster] = when
            if self._metrics is not None:
                self._metrics.last_seen.labels(cluster).set(when.timestamp())

    def heard_from(self, handler: Handler) -> Handler:
        """`handler`, noting first that the event's cluster was heard from."""

        async def heard(event: Event, delivery: Delivery) -> None:
            self.noted(event.cluster)
            await handler(event, delivery)

        return heard

    # -- the reports bucket ---------------------------------------------------------------------

    async def watch(self, bucket: Bucket) -> None:
        """Follow every cluster's report until cancelled."""
        async for update in bucket.watch(">"):
            match update:
                case Snapshot(entries=entries):
                    for entry in entries.values():
                        self._take(entry, fresh=False)
                    self.loaded.set()
                case Put(entry=entry):
                    self._take(entry, fresh=True)
                case Deleted(key=key):
                    self._reports.pop(key, None)

    def _take(self, entry: KvEntry, *, fresh: bool) -> None:
        try:
            report = ClusterReport.decode(entry.value)
        except ValidationError:
            log.warning("unreadable cluster report ignored", key=entry.key)
            return
        if report.cluster != entry.key:
            log.warning("report under another cluster's key ignored", key=entry.key)
            return
        self._reports[report.cluster] = report
        log.debug("report read", cluster=report.cluster, certificates=len(report.certificates))
        # A report just written is heard now; one read back after a restart, at its own time.
        self.noted(report.cluster, None if fresh else min(report.time, self._clock()))

    # -- the periodic check ---------------------------------------------------------------------

    async def ready(self) -> None:
        await self._declarations.wait_synced()
        await self.loaded.wait()

    async def check(self) -> None:
        """Flag or clear every declaration whose status the decision changes.

        Each declaration is taken from the cache at its turn, not from a copy of the whole cache
        made when the check began: the writes before it take time, the status mirror writes
        meanwhile, and a write from a copy older than the cache's is a 409 (a read and a second
        write) for nothing."""
        keys = self._declarations.keys()  # a list: the cache may change under the loop
        for key in keys:
            obj = self._declarations.get(key)
            if obj is None or not self._settings.is_cluster(key.namespace):
                continue
            try:
                current = IssuedCertificate.from_object(obj).status
            except ValidationError:
                continue
            if self._decide(key.namespace, key.name, current) == current:
                continue
            await self._write(key.namespace, key.name, obj)

    def _decide(
        self, cluster: str, name: str, current: IssuedCertificateStatus
    ) -> IssuedCertificateStatus:
        seen = self.seen(cluster)
        reported = self._reported(cluster, name)
        flag = liveness_flag(seen, current, reported, now=self._clock(), thresholds=self.thresholds)
        return checked_status(
            current, flag=flag, heard=seen.heard, reported=reported, thresholds=self.thresholds
        )

    def _reported(self, cluster: str, name: str) -> ReportedCertificate | None:
        report = self._reports.get(cluster)
        if report is None:
            return None
        return next((c for c in report.certificates if c.name == name), None)

    async def _write(self, cluster: str, name: str, obj: object) -> None:
        try:
            _, write = await update_model_status(
                self._kube,
                IssuedCertificate,
                name,
                namespace=cluster,
                mutate=lambda ic: self._decide(cluster, name, ic.status),
                current=obj if isinstance(obj, dict) else None,
            )
        except NotFound:
            return
        except (KubeError, ValidationError, TransientError) as exc:
            log.warning(
                "liveness not written; next check", name=f"{cluster}/{name}", error=str(exc)
            )
            return
        if write.attempts > 1:
            self.retried += 1
        if write.changed:
            log.info("liveness written", name=f"{cluster}/{name}")
