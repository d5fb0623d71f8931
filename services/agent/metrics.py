"""The agent's metrics (docs/metrics.md), per IssuedCertificate of this cluster.

Expiry, renewal time and state are read at scrape time from the informers' caches (the objects'
status, which the reconciler writes from the installed certificate), as cert-manager's
certificate collector does from its lister: level-based, nothing to keep in step with the
reconciler, and a deleted certificate's series go with it. The issuance duration is a histogram
the reconciler observes once per issuance, when it writes ISSUED.

Labels: `cluster`, `namespace`, `name` (objects, a bounded set), `state` (the five states);
never an issuance id.

Deliberately not here: the consumer's metrics (`shared.bus.metrics`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Sequence

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from pydantic import ValidationError

from shared.api.meta import ObjectKey
from shared.api.v1alpha2 import IssuedCertificateStatus, State
from shared.k8s.informer import Informer
from shared.runtime.metrics import DURATION_BUCKETS

LABELS = ("cluster", "namespace", "name")


class AgentMetrics:
    """Registers the agent's metrics in `registry`; `informers` are the IssuedCertificate
    informers of this cluster."""

    def __init__(
        self, registry: CollectorRegistry, *, cluster: str, informers: Sequence[Informer]
    ) -> None:
        self._cluster = cluster
        self.issuance_duration = Histogram(
            "meshtrust_agent_issuance_duration_seconds",
            "From the last csr.requested sent for an issuance to its certificate installed "
            "(ISSUED); observed once per issuance.",
            LABELS,
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        registry.register(_CertificateCollector(cluster, informers))

    def issued(self, key: ObjectKey, *, sent_at: dt.datetime | None, now: dt.datetime) -> None:
        """An issuance reached ISSUED (its status written); `sent_at`: when its CSR was last
        sent (None, e.g. after a crash before the key Secret was marked: not observed)."""
        if sent_at is None:
            return
        seconds = max(0.0, (now - sent_at).total_seconds())
        self.issuance_duration.labels(self._cluster, key.namespace, key.name).observe(seconds)


class _CertificateCollector(Collector):
    def __init__(self, cluster: str, informers: Sequence[Informer]) -> None:
        self._cluster = cluster
        self._informers = informers

    def describe(self) -> Iterator[Metric]:
        return iter(self._families())

    def collect(self) -> Iterator[Metric]:
        expiry, renewal, state = self._families()
        for informer in self._informers:
            for obj in informer.items():
                key = ObjectKey.of(obj)
                try:
                    status = IssuedCertificateStatus.model_validate(obj.get("status") or {})
                except ValidationError:
                    continue  # an unreadable status says nothing; the reconciler rewrites it
                labels = [self._cluster, key.namespace, key.name]
                if status.not_after is not None:
                    expiry.add_metric(labels, status.not_after.timestamp())
                if status.renewal_time is not None:
                    renewal.add_metric(labels, status.renewal_time.timestamp())
                for one in State:
                    state.add_metric([*labels, one.value], 1.0 if status.state is one else 0.0)
        yield from (expiry, renewal, state)

    @staticmethod
    def _families() -> tuple[GaugeMetricFamily, GaugeMetricFamily, GaugeMetricFamily]:
        return (
            GaugeMetricFamily(
                "meshtrust_agent_certificate_expiration_timestamp_seconds",
                "The installed certificate's notAfter (Unix time).",
                labels=LABELS,
            ),
            GaugeMetricFamily(
                "meshtrust_agent_certificate_renewal_timestamp_seconds",
                "When the agent renews the certificate (status.renewalTime, Unix time); after a "
                "failure, when it tries again.",
                labels=LABELS,
            ),
            GaugeMetricFamily(
                "meshtrust_agent_certificate_state",
                "1 for the certificate's current state, 0 for the others.",
                labels=(*LABELS, "state"),
            ),
        )
