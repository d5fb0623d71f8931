"""The issuer's settings (`MESHTRUST_ISSUER_*`), read once from the environment and frozen.

Groups shared with the other services keep their own prefixes and are composed as fields:
`MESHTRUST_NATS_*`, `MESHTRUST_KUBE_*`, `MESHTRUST_HEALTH_*`, `MESHTRUST_LOG_*`. Every field says
its unit and why its default.
"""

from __future__ import annotations

import re
import socket
from datetime import timedelta
from typing import Annotated, Self

from pydantic import AliasChoices, Field, field_validator, model_validator
from pydantic_settings import NoDecode

from shared.api.durations import parse_duration
from shared.bus import NatsSettings
from shared.k8s.config import KubeSettings
from shared.pki import KeyPolicy
from shared.runtime import LoggingSettings, MeshtrustSettings
from shared.runtime.health import HealthSettings


def _hostname() -> str:
    # The pod name in Kubernetes, made to fit the envelope's `source` pattern.
    name = re.sub(r"[^a-z0-9.-]", "-", socket.gethostname().lower())[:253]
    return name or "issuer"


DEFAULT_EXCLUDED_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")


class IssuerSettings(MeshtrustSettings, env_prefix="MESHTRUST_ISSUER_"):
    instance: str = Field(
        default_factory=_hostname,
        pattern=r"^[a-z0-9.-]{1,253}$",
        description="This replica's name (the pod name in Kubernetes): events carry "
        "source 'issuer/<instance>' and the ledger names who signed.",
    )

    # --- what is signed ---
    max_ttl: timedelta = Field(
        default=timedelta(days=730),
        gt=timedelta(0),
        description="Longest lifetime of an issued intermediate, whatever certOptions asks "
        "(a Go duration such as '17520h' in the environment, as certOptions.ttl; plain "
        "seconds or ISO 8601 work too). Two years: an intermediate that a remote cluster "
        "holds longer should be renewed, not trusted blindly.",
    )
    backdate: timedelta = Field(
        default=timedelta(minutes=5),
        ge=timedelta(0),
        description="notBefore is this much before signing, for clock skew between clusters "
        "(a duration, as max_ttl).",
    )
    path_len: int = Field(
        default=0,
        ge=0,
        description="pathLenConstraint of issued intermediates: 0, they sign workloads only.",
    )
    rsa_min_bits: int = Field(default=2048, ge=2048, description="Smallest RSA CSR key, bits.")
    rsa_max_bits: int = Field(default=8192, ge=2048, description="Largest RSA CSR key, bits.")
    ecdsa_curves: Annotated[tuple[str, ...], NoDecode] = Field(
        default=("secp256r1", "secp384r1"),
        description="Allowed CSR curves, comma-separated (P-256, P-384: what Istio supports).",
    )

    # --- how many ---
    issuance_per_hour: float = Field(
        default=10.0,
        gt=0,
        description="New signatures per cluster per hour, per replica, once the burst is "
        "spent (a token bucket; answers sent again from meshtrust-issued do not count). Ten an "
        "hour is far above a fleet's need (a cluster renews a handful of intermediates a "
        "year) and far below a flood; a denied CSR (RateLimited) carries the time to re-send.",
    )
    issuance_burst: int = Field(
        default=5,
        ge=1,
        description="New signatures a cluster may have at once (the bucket's size): room for a "
        "cluster's intermediates re-issued together after a CA rotation.",
    )

    # --- which declarations ---
    excluded_namespaces: Annotated[tuple[str, ...], NoDecode] = Field(
        default=DEFAULT_EXCLUDED_NAMESPACES,
        description="Namespaces that are not cluster registrations, comma-separated (add the "
        "issuer's own namespace, where the signing Secrets usually live).",
    )
    clusters: Annotated[tuple[str, ...], NoDecode] = Field(
        default=(),
        description="Remote clusters whose agent and bouncer connect in NATS accounts of their "
        "own (the clusters of `meshtrust nats-config`), comma-separated: their consumers are "
        "made at provisioning and kept from the issuer's start. Any other cluster gets its "
        "consumers when its first declaration is published.",
    )
    signing_namespaces: Annotated[tuple[str, ...], NoDecode] = Field(
        default=(),
        validation_alias=AliasChoices(
            "signing_namespaces",
            "signing_namespace",
            "MESHTRUST_ISSUER_SIGNING_NAMESPACES",
            "MESHTRUST_ISSUER_SIGNING_NAMESPACE",
        ),
        description="The namespaces whose Secrets may sign, comma-separated "
        "(`MESHTRUST_ISSUER_SIGNING_NAMESPACES`, or the older single-value "
        "`MESHTRUST_ISSUER_SIGNING_NAMESPACE`). A declaration whose signingCertificateSecret "
        "is elsewhere is FAILED and its CSRs denied: who may sign with which CA is the "
        "administrator's choice, not the declaration author's. Only these namespaces' Secrets "
        "are watched. Empty (the default) is the permissive mode: any namespace's Secret may "
        "sign and Secrets are watched cluster-wide (docs/issuer.md).",
    )
    registration_namespace: str = Field(
        default="meshtrust-system",
        pattern=r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$",
        description="The namespace of the ClusterRegistrations (one per cluster, named after "
        "it), which bound what each cluster's declarations may ask: only there are they "
        "watched, so only whoever may write there (the administrator) sets them.",
    )
    require_registration: bool = Field(
        default=False,
        description="Whether a cluster without a ClusterRegistration is refused (its "
        "declarations FAILED, ClusterNotRegistered). False (the default) is the permissive "
        "mode: such a cluster is bounded by the issuer's settings only (docs/issuer.md).",
    )
    sweep_interval: float = Field(
        default=300.0,
        gt=0,
        description="Seconds between sweeps of the desired-state bucket for keys whose "
        "declaration is gone (deletions missed while no issuer ran).",
    )

    # --- bus consumers ---
    status_durable: str = Field(
        default="issuer-status", description="Durable consumer of status.changed."
    )
    csr_in_flight: int = Field(
        default=16,
        ge=1,
        description="CSRs handled at once per replica: signing is CPU-bound, so a few more "
        "than the signing threads keep them busy while others wait on the API and the bus.",
    )
    status_in_flight: int = Field(default=32, ge=1, description="Status reports handled at once.")
    fetch_timeout: float = Field(
        default=10.0,
        gt=0,
        description="Seconds an idle bus pull waits for messages (fewer idle pulls: a fleet's "
        "NATS answers every one); a message, a stop and a reconnect end the wait at once.",
    )
    ack_wait: float = Field(
        default=5.0,
        gt=0,
        description="Seconds before an unacknowledged CSR is redelivered (a crashed replica's: "
        "a CSR being signed is kept alive with in_progress()).",
    )
    cluster_ack_wait: float = Field(
        default=5.0,
        gt=0,
        description="Ack wait of the consumers the issuer makes for each cluster's agent and "
        "bouncer (shared.bus.fleet): how long a crashed agent's or bouncer's message waits "
        "before it comes back. Handlers in progress are kept alive.",
    )
    claim_lease: float = Field(
        default=10.0,
        gt=0,
        description='Seconds an issuance\'s claim holds (docs/issuer.md, "Several replicas"): '
        "a replica claims an issuance in meshtrust-issued before it signs, renews the claim "
        "every third of this while it works, and another replica takes over a claim not "
        "renewed for this long (its holder crashed). Keep the replicas' clock skew well "
        "below it; twice the ack wait lets a crashed replica's CSRs come back first.",
    )
    signing_threads: int = Field(
        default=2, ge=1, description="Threads that sign (one per core keeps the loop free)."
    )
    grace: float = Field(
        default=20.0, gt=0, description="Seconds in-flight work may take after SIGTERM."
    )
    workers: int = Field(default=2, ge=1, description="Concurrent reconciles (of distinct keys).")
    reissue_wave: int = Field(
        default=10,
        ge=0,
        description="Clusters re-issuing at once when a change reaches many declarations (a new "
        "signing chain, a mass edit): the next cluster's change is published only when fewer "
        'are re-issuing (docs/issuer.md, "Re-issue waves"); 0: no limit.',
    )

    # --- root rotation (docs/rotation.md) ---
    rotation_step_timeout: timedelta = Field(
        default=timedelta(minutes=15),
        gt=timedelta(0),
        description="A cluster moved to a rotation step and not done (every declaration "
        "signed for the step and FINISHED) within this long pauses the rotation (a duration).",
    )
    # --- liveness (docs/issuer.md, "Liveness") ---
    silence_threshold: timedelta = Field(
        default=timedelta(minutes=3),
        gt=timedelta(0),
        description="A cluster not heard from (report or event) for longer is flagged silent on "
        "its declarations: three of the agents' default 60 s reports missed (a duration, as "
        "max_ttl). Keep it above MESHTRUST_AGENT_REPORT_INTERVAL.",
    )
    renewal_grace: timedelta = Field(
        default=timedelta(minutes=10),
        ge=timedelta(0),
        description="A certificate still not renewed this long after its renewalTime is "
        "flagged (a renewal takes seconds; a few failed attempts' backoff fits in ten minutes).",
    )
    liveness_interval: float = Field(
        default=15.0,
        gt=0,
        description="Seconds between two checks of every declaration against its cluster's "
        "last-seen time and last report (in memory; writes only what changes).",
    )
    last_seen_resolution: timedelta = Field(
        default=timedelta(minutes=1),
        ge=timedelta(0),
        description="status.lastSeenTime moves by at least this much: a fleet reporting every "
        "minute does not rewrite every declaration on every report (the metric "
        "meshtrust_issuer_cluster_last_seen_timestamp_seconds is exact).",
    )

    # --- groups ---
    nats: NatsSettings = Field(default_factory=NatsSettings)
    kube: KubeSettings = Field(default_factory=KubeSettings)
    health: HealthSettings = Field(default_factory=HealthSettings)
    logging: LoggingSettings = Field(default_factory=LoggingSettings)

    @field_validator(
        "ecdsa_curves", "excluded_namespaces", "clusters", "signing_namespaces", mode="before"
    )
    @classmethod
    def _split(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator(
        "max_ttl",
        "backdate",
        "silence_threshold",
        "renewal_grace",
        "last_seen_resolution",
        mode="before",
    )
    @classmethod
    def _duration(cls, value: object) -> object:
        if isinstance(value, str):
            text = value.strip()
            if text.replace(".", "", 1).isdigit():
                return float(text)  # seconds
            try:
                return parse_duration(text)
            except ValueError:
                return value  # ISO 8601, or an error pydantic reports
        return value

    @model_validator(mode="after")
    def _policy_is_possible(self) -> Self:
        self.key_policy()  # raises ValueError, which pydantic reports against the settings
        return self

    def is_cluster(self, namespace: str) -> bool:
        """Whether `namespace` names a remote cluster (every namespace not excluded)."""
        return bool(namespace) and namespace not in self.excluded_namespaces

    def signs_from(self, namespace: str) -> bool:
        """Whether a Secret in `namespace` may be a signing CA (any, when unscoped)."""
        return not self.signing_namespaces or namespace in self.signing_namespaces

    @property
    def source(self) -> str:
        """The envelope's `source` of everything this replica publishes."""
        return f"issuer/{self.instance}"

    def key_policy(self) -> KeyPolicy:
        """The CSR key policy (raises ValueError for an impossible combination)."""
        return KeyPolicy(
            rsa_min_bits=self.rsa_min_bits,
            rsa_max_bits=self.rsa_max_bits,
            ecdsa_curves=frozenset(self.ecdsa_curves),
        )
