"""The issuer's metrics (docs/metrics.md): signatures and denials, how long a CSR waited for its
signature, when each cluster was last heard from, when the signing CAs expire, when each
cluster's certificates expire and are renewed, and how full the bus's streams are (read every
`STREAM_SIZES_INTERVAL` seconds by `app.py`).

The signing CAs' expiry is read at scrape time from the signing Secrets informer's cache (the
certificates only, never a key), cached per Secret version so that a scrape parses nothing that
did not change; the certificates' expiry and renewal, at scrape time from the clusters' last
reports (`heartbeats.Heartbeats`, which also sets the last-seen gauge). The rest is observed by
the handlers.

Labels: `cluster` (the clusters whose events reach the issuer: only clusters with a NATS identity
can publish), `reason` (the policies' fixed codes, bounded again by `BoundedLabels`), and a
signing Secret's or a remote IssuedCertificate's `namespace` and `name`; never an issuance id.

Deliberately not here: the consumers' metrics (`shared.bus.metrics`).
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from shared.api.meta import metadata
from shared.bus.sizes import StreamSize
from shared.events.reports import ClusterReport
from shared.k8s.informer import Informer
from shared.pki.authority import signing_ca_expiry
from shared.pki.errors import InvalidSigningCA
from shared.runtime.metrics import DURATION_BUCKETS, BoundedLabels

MAX_REASONS = 32
"""Distinct denial reasons kept as labels; later ones count as `other` (the policies have far
fewer)."""


class IssuerMetrics:
    def __init__(
        self,
        registry: CollectorRegistry,
        *,
        signing_secrets: Sequence[Informer] = (),
        rotations: Informer | None = None,
    ) -> None:
        """Read when scraped: the CAs' expiry (signing Secrets' informers), the rotations."""
        self.signing_duration = Histogram(
            "meshtrust_issuer_signing_duration_seconds",
            "From a csr.requested event's time (set by the agent) to its certificate signed and "
            "recorded; a certificate sent again for a request answered before is not observed.",
            ["cluster"],
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        self.signatures = Counter(
            "meshtrust_issuer_signatures",
            "Certificates signed: every signature made, once, whether or not it is the one sent "
            "(answering a request again from its record is not one).",
            ["cluster"],
            registry=registry,
        )
        self._replica_counters(registry)
        self.denials = Counter(
            "meshtrust_issuer_denials",
            "CSRs denied, by the policy's reason code.",
            ["cluster", "reason"],
            registry=registry,
        )
        self.last_seen = Gauge(
            "meshtrust_issuer_cluster_last_seen_timestamp_seconds",
            "When the issuer last heard from the cluster: its periodic report (meshtrust-reports) "
            "or an event (csr.requested, status.changed); Unix time.",
            ["cluster"],
            registry=registry,
        )
        self.stream_bytes = Gauge(
            "meshtrust_bus_stream_bytes",
            "Bytes a JetStream stream holds (the event stream, the ledger, the record stream, "
            "the buckets), as last read by the issuer.",
            ["stream"],
            registry=registry,
        )
        self.stream_max_bytes = Gauge(
            "meshtrust_bus_stream_max_bytes",
            "A stream's size limit in bytes (0: none); at the limit new messages are refused.",
            ["stream"],
            registry=registry,
        )
        self.stream_messages = Gauge(
            "meshtrust_bus_stream_messages",
            "Messages a JetStream stream holds, as last read by the issuer.",
            ["stream"],
            registry=registry,
        )
        self._reasons = BoundedLabels(MAX_REASONS)
        self._registry = registry
        if signing_secrets:
            registry.register(_SigningCACollector(signing_secrets))
        if rotations is not None:
            registry.register(_RotationCollector(rotations))

    def _replica_counters(self, registry: CollectorRegistry) -> None:
        """What the replicas' coordination does (docs/issuer.md, "Several replicas")."""
        self.signatures_discarded = Counter(
            "meshtrust_issuer_signatures_discarded",
            "Signatures made and then dropped because another replica's record of the same "
            "issuance was stored first: a second signature of one issuance (expected 0; a "
            "claim taken over from a replica that was alive but late).",
            ["cluster"],
            registry=registry,
        )
        self.claim_waits = Counter(
            "meshtrust_issuer_claim_waits",
            "CSRs put back (nak with a delay) because another replica held the issuance's claim.",
            ["cluster"],
            registry=registry,
        )
        self.claims_taken_over = Counter(
            "meshtrust_issuer_claims_taken_over",
            "Issuance claims of another replica taken over after their lease ran out without a "
            "renewal (the holder crashed or stalled).",
            ["cluster"],
            registry=registry,
        )

    def signed(self, cluster: str, *, requested: dt.datetime, now: dt.datetime) -> None:
        """A signature recorded (the one sent): its duration; counted when made (`made`)."""
        self.signing_duration.labels(cluster).observe(max(0.0, (now - requested).total_seconds()))

    def made(self, cluster: str) -> None:
        """A signature made (recorded or not)."""
        self.signatures.labels(cluster).inc()

    def denied(self, cluster: str, reason: str) -> None:
        self.denials.labels(cluster, self._reasons(reason)).inc()

    def streams(self, sizes: Iterable[StreamSize]) -> None:
        """Note the streams' sizes (`shared.bus.sizes`)."""
        for size in sizes:
            self.stream_bytes.labels(size.stream).set(size.bytes)
            self.stream_max_bytes.labels(size.stream).set(size.max_bytes)
            self.stream_messages.labels(size.stream).set(size.messages)

    def watch_reports(self, reports: Callable[[], Iterable[ClusterReport]]) -> None:
        """Export the certificates' expiry and renewal times from the clusters' last reports
        (read at scrape time; they stay while a cluster is silent)."""
        self._registry.register(_ReportCollector(reports))


class _ReportCollector(Collector):
    def __init__(self, reports: Callable[[], Iterable[ClusterReport]]) -> None:
        self._reports = reports

    def describe(self) -> Iterator[Metric]:
        return iter(self._families())

    def collect(self) -> Iterator[Metric]:
        expiry, renewal = self._families()
        for report in self._reports():
            for certificate in report.certificates:
                labels = [report.cluster, certificate.namespace, certificate.name]
                if certificate.not_after is not None:
                    expiry.add_metric(labels, certificate.not_after.timestamp())
                if certificate.renewal_time is not None:
                    renewal.add_metric(labels, certificate.renewal_time.timestamp())
        yield from (expiry, renewal)

    @staticmethod
    def _families() -> tuple[GaugeMetricFamily, GaugeMetricFamily]:
        labels = ("cluster", "namespace", "name")
        return (
            GaugeMetricFamily(
                "meshtrust_issuer_certificate_expiration_timestamp_seconds",
                "An IssuedCertificate's notAfter, from its cluster's last report (namespace: "
                "where it is in the cluster; Unix time).",
                labels=labels,
            ),
            GaugeMetricFamily(
                "meshtrust_issuer_certificate_renewal_timestamp_seconds",
                "When the cluster's agent renews the IssuedCertificate (renewalTime), from its "
                "last report (Unix time).",
                labels=labels,
            ),
        )


class _SigningCACollector(Collector):
    def __init__(self, secrets: Sequence[Informer]) -> None:
        self._secrets = tuple(secrets)
        self._cache: dict[tuple[str, str], tuple[float, float] | None] = {}
        """(uid, resourceVersion) -> (CA notAfter, root notAfter), None: not a signing Secret."""

    def describe(self) -> Iterator[Metric]:
        return iter(self._families())

    def collect(self) -> Iterator[Metric]:
        ca, root = self._families()
        seen: set[tuple[str, str]] = set()
        for secret in (item for informer in self._secrets for item in informer.items()):
            meta = metadata(secret)
            version = (meta.uid, meta.resource_version or "")
            seen.add(version)
            if version not in self._cache:
                self._cache[version] = _expiry(secret.get("data") or {})
            expiry = self._cache[version]
            if expiry is None:
                continue
            labels = [str(meta.get("namespace") or ""), str(meta.get("name") or "")]
            ca.add_metric(labels, expiry[0])
            root.add_metric(labels, expiry[1])
        for gone in self._cache.keys() - seen:
            del self._cache[gone]
        yield from (ca, root)

    @staticmethod
    def _families() -> tuple[GaugeMetricFamily, GaugeMetricFamily]:
        return (
            GaugeMetricFamily(
                "meshtrust_issuer_signing_ca_expiration_timestamp_seconds",
                "The signing CA certificate's notAfter, per signing Secret (Unix time).",
                labels=("namespace", "name"),
            ),
            GaugeMetricFamily(
                "meshtrust_issuer_root_ca_expiration_timestamp_seconds",
                "The notAfter of the root a signing Secret chains to (Unix time).",
                labels=("namespace", "name"),
            ),
        )


def _expiry(data: Mapping[str, Any]) -> tuple[float, float] | None:
    try:
        decoded = {str(k): base64.b64decode(str(v), validate=True) for k, v in data.items()}
        ca, root = signing_ca_expiry(decoded)
    except (binascii.Error, ValueError, InvalidSigningCA):
        return None
    return ca.timestamp(), root.timestamp()


class _RotationCollector(Collector):
    """Each CertificateRotation's phase, whether it is paused, and its clusters by state
    (docs/rotation.md), from the informer's cache when scraped."""

    def __init__(self, rotations: Informer) -> None:
        self._rotations = rotations

    def describe(self) -> Iterator[Metric]:
        return iter(self._families())

    def collect(self) -> Iterator[Metric]:
        phase, paused, clusters = self._families()
        for raw in self._rotations.items():
            name = metadata(raw).name
            status = raw.get("status") or {}
            phase.add_metric([name, str(status.get("phase") or "Pending")], 1.0)
            paused.add_metric([name], 1.0 if status.get("paused") else 0.0)
            counts: dict[str, int] = {}
            for line in status.get("clusters") or ():
                state = str(line.get("state") or "Pending")
                counts[state] = counts.get(state, 0) + 1
            for state, count in sorted(counts.items()):
                clusters.add_metric([name, state], float(count))
        yield from (phase, paused, clusters)

    @staticmethod
    def _families() -> tuple[GaugeMetricFamily, GaugeMetricFamily, GaugeMetricFamily]:
        return (
            GaugeMetricFamily(
                "meshtrust_issuer_rotation_phase",
                "1 for a CertificateRotation's current phase (status.phase).",
                labels=("rotation", "phase"),
            ),
            GaugeMetricFamily(
                "meshtrust_issuer_rotation_paused",
                "1 while a CertificateRotation is paused by a failing cluster or an unusable CA.",
                labels=("rotation",),
            ),
            GaugeMetricFamily(
                "meshtrust_issuer_rotation_clusters",
                "A CertificateRotation's clusters by the state of their step (Pending, "
                "InProgress, Done, Failed).",
                labels=("rotation", "state"),
            ),
        )
