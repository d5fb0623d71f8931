"""The bouncer's settings (`MESHTRUST_BOUNCER_*`), read once at start and passed down frozen.

`MESHTRUST_BOUNCER_CLUSTER` (required) names the cluster this bouncer serves; its durable
consumer is `bouncer-<cluster>` on `meshtrust.v1.<cluster>.bounce.requested` (docs/flow.md).
Groups shared with the other services keep their own prefixes and are composed here as fields:
`MESHTRUST_NATS_*`, `MESHTRUST_KUBE_*`, `MESHTRUST_HEALTH_*`, `MESHTRUST_LOG_*`.
"""

from __future__ import annotations

import socket

from pydantic import Field

from shared.bus import NatsSettings
from shared.events import ClusterName
from shared.k8s.config import KubeSettings
from shared.runtime import LoggingSettings, MeshtrustSettings
from shared.runtime.health import HealthSettings


def _hostname() -> str:
    # The pod name in Kubernetes; lower-cased so that it fits the envelope's `source` pattern.
    return socket.gethostname().lower()


class BouncerSettings(MeshtrustSettings, env_prefix="MESHTRUST_BOUNCER_"):
    cluster: ClusterName = Field(
        description="The cluster this bouncer serves: its token in every subject it uses."
    )
    instance: str = Field(
        default_factory=_hostname,
        pattern=r"^[a-z0-9.-]{1,253}$",
        description="This process's name in `source` ('bouncer/<instance>'); the pod name.",
    )

    # --- deadlines: each wait of one selector gives up after this long, in seconds ---
    root_cert_sync_timeout: float = Field(
        default=300.0,
        gt=0,
        description="Seconds to wait for the root ConfigMap to match the Secret. istiod copies "
        "it into every namespace within seconds; five minutes covers a restarting istiod.",
    )
    replicas_timeout: float = Field(
        default=600.0,
        gt=0,
        description="Seconds to wait for waitForReplicas Ready replacements: a Deployment's "
        "own progressDeadlineSeconds default (image pulls on a cold node take minutes).",
    )
    rollout_timeout: float = Field(
        default=600.0,
        gt=0,
        description="Seconds to wait for a RolloutRestart to finish; same reasoning.",
    )
    delete_timeout: float = Field(
        default=60.0,
        gt=0,
        description="Seconds to keep retrying pod deletions that failed before reporting them.",
    )
    directive_timeout: float = Field(
        default=60.0,
        gt=0,
        description="Seconds to wait for a PodBounceDirective not found yet: the "
        "IssuedCertificate naming it may reach the cluster first.",
    )

    # --- the consumer ---
    max_in_flight: int = Field(
        default=2,
        ge=1,
        le=16,
        description="Bounces at once (of different directives: one directive is never bounced "
        "twice at once). Each bounce restarts workloads; two keep one slow directive from "
        "blocking another without storming the cluster.",
    )
    ack_wait: float = Field(
        default=5.0,
        gt=0,
        description="Seconds without an ack before JetStream redelivers, where the bouncer "
        "makes its own consumer (MESHTRUST_NATS_PROVISION); else the hub's consumer has the "
        "issuer's MESHTRUST_ISSUER_CLUSTER_ACK_WAIT. A running bounce is kept alive with "
        "in_progress(), so only a dead bouncer's requests come back.",
    )
    fetch_timeout: float = Field(
        default=10.0,
        gt=0,
        description="Seconds an idle bus pull waits for messages (fewer idle pulls: a fleet's "
        "NATS answers every one); a message, a stop and a reconnect end the wait at once.",
    )
    retry_initial: float = Field(
        default=1.0, gt=0, description="Seconds before redelivering after a transient failure."
    )
    retry_max: float = Field(default=60.0, gt=0, description="Cap of that backoff, in seconds.")
    grace: float = Field(
        default=20.0,
        gt=0,
        description="Seconds a stopping bouncer lets a running bounce go on before cancelling "
        "it (the request stays unacked and resumes from the directive's status elsewhere). "
        "Below Kubernetes' default terminationGracePeriodSeconds of 30.",
    )

    nats: NatsSettings = Field(default_factory=NatsSettings)
    kube: KubeSettings = Field(default_factory=KubeSettings)
    health: HealthSettings = Field(default_factory=HealthSettings)
    logging: LoggingSettings = Field(default_factory=LoggingSettings)

    @property
    def source(self) -> str:
        """The envelope's `source` of what this bouncer publishes."""
        return f"bouncer/{self.instance}"

    @property
    def durable(self) -> str:
        """The durable consumer of this cluster's bouncer (docs/flow.md)."""
        return f"bouncer-{self.cluster}"
