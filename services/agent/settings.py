"""The agent's settings (`MESHTRUST_AGENT_*`), read once at start and passed down frozen.

Groups shared with the other services keep their own prefixes and are composed here as fields:
`MESHTRUST_NATS_*`, `MESHTRUST_KUBE_*`, `MESHTRUST_HEALTH_*`, `MESHTRUST_LOG_*`. Lists come as
comma-separated strings (`MESHTRUST_AGENT_NAMESPACES=istio-system,gloo-mesh`).
"""

from __future__ import annotations

import socket
from typing import Annotated

from pydantic import Field, field_validator
from pydantic_settings import NoDecode

from shared.bus import NatsSettings
from shared.events import ClusterName
from shared.k8s.config import KubeSettings
from shared.runtime import LoggingSettings, MeshtrustSettings
from shared.runtime.health import HealthSettings


def _hostname() -> str:
    # The pod name in Kubernetes; lower-cased so that it fits the envelope's `source` pattern.
    return socket.gethostname().lower()


class AgentSettings(MeshtrustSettings, env_prefix="MESHTRUST_AGENT_"):
    cluster: ClusterName = Field(
        description="This cluster's name: its namespace in the management cluster and its token "
        "in every subject and desired-state key."
    )
    instance: str = Field(
        default_factory=_hostname,
        pattern=r"^[a-z0-9.-]{1,253}$",
        description="This replica's name in `source` ('agent/<instance>') and in Events.",
    )
    namespaces: Annotated[tuple[str, ...], NoDecode] = Field(
        default=(),
        description="Namespaces whose IssuedCertificates this agent handles; empty means all.",
    )

    trust_bundle: str = Field(
        default="meshtrust-system/meshtrust-trust-bundle",
        pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?/[a-z0-9]([-.a-z0-9]*[a-z0-9])?$",
        description="`<namespace>/<name>` of this cluster's trust bundle: a ConfigMap whose key "
        "`roots.pem` holds the pinned root certificate(s). A certificate.issued that does not "
        "chain to one of them is refused (docs/agent.md).",
    )

    # --- the state machine's timing, in seconds ---
    resend_after: float = Field(
        default=60.0,
        gt=0,
        description="A csr.requested without answer for this long is sent again (a new "
        "attempt); the issuer answers a repeated attempt from its ledger.",
    )
    failure_backoff_initial: float = Field(
        default=10.0,
        gt=0,
        description="Wait before retrying a FAILED issuance the first time; doubles per failure.",
    )
    failure_backoff_max: float = Field(
        default=600.0,
        gt=0,
        description="Cap of the FAILED retry wait: a broken issuance is retried six times an hour.",
    )
    renewal_jitter: float = Field(
        default=0.05,
        ge=0,
        lt=1,
        description="Renewal starts up to this fraction of the renewal window earlier, at "
        "random, so that many clusters issued together do not all renew at the same second.",
    )
    max_requeue: float = Field(
        default=3600.0,
        gt=0,
        description="Longest a FINISHED certificate waits unobserved: wall-clock jumps and "
        "missed events are caught at least this often.",
    )

    # --- liveness ---
    report_interval: float = Field(
        default=60.0,
        gt=0,
        description="Seconds between this cluster's reports to the issuer (its IssuedCertificates' "
        "state, notAfter and renewalTime, written to its key of `meshtrust-reports` whether "
        "anything changed or not): the management cluster's heartbeat of this cluster. A "
        "minute keeps 1,000 clusters at ~17 small KV writes a second; the issuer flags a "
        "cluster silent after a few missed reports (docs/issuer.md, 'Liveness').",
    )

    # --- plumbing ---
    workers: int = Field(default=2, ge=1, description="Concurrent reconciles (of distinct keys).")
    max_in_flight: int = Field(
        default=16, ge=1, description="Bus messages handled at once (each may write a Secret)."
    )
    fetch_timeout: float = Field(
        default=10.0,
        gt=0,
        description="Seconds an idle bus pull waits for messages (fewer idle pulls: a fleet's "
        "NATS answers every one); a message, a stop and a reconnect end the wait at once.",
    )
    grace: float = Field(
        default=20.0, gt=0, description="Seconds in-flight work may take after SIGTERM."
    )

    nats: NatsSettings = Field(default_factory=NatsSettings)
    kube: KubeSettings = Field(default_factory=KubeSettings)
    health: HealthSettings = Field(default_factory=HealthSettings)
    logging: LoggingSettings = Field(default_factory=LoggingSettings)

    @field_validator("namespaces", mode="before")
    @classmethod
    def _split_namespaces(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @property
    def source(self) -> str:
        """The envelope's `source` of everything this agent publishes."""
        return f"agent/{self.instance}"

    @property
    def durable(self) -> str:
        """The agent's durable consumer (docs/flow.md)."""
        return f"agent-{self.cluster}"
