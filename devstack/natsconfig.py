"""nats-server configuration with one user per service and per-cluster permissions.

The issuer may do everything. The agent and the bouncer of cluster `c` may publish only their
cluster's events (`meshtrust.v1.c.>`), use only their own durable consumer, read only their
cluster's part of the desired state, and receive replies only on their own inbox prefix
(`_INBOX_<user>`, which they must pass as `MESHTRUST_NATS_INBOX_PREFIX`). The subject of every
event is therefore proof of the sender's cluster.

Reading the audit stream is allowed to everyone (message gets by sequence): it holds CSRs and
certificates, never keys.

The output is JSON, which nats-server reads as configuration, so no value needs escaping.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from shared.events import DESIRED_BUCKET, check_cluster_name

STREAM = "MESHTRUST"
RECORDS = "MESHTRUST_CONSUMED"
LEDGER = "MESHTRUST_LEDGER"
KV_STREAM = f"KV_{DESIRED_BUCKET}"
ISSUER_USER = "issuer"
AUDITOR_USER = "auditor"
"""Reads the event stream and the ledger, nothing else (`meshtrust audit`, `meshtrust ledger`)."""
AUDITOR_INBOX = "_INBOX_auditor"


@dataclass(frozen=True)
class ClusterUser:
    """A per-cluster service user: `agent-east`, `bouncer-east`."""

    service: str
    cluster: str

    @property
    def name(self) -> str:
        return f"{self.service}-{self.cluster}"

    @property
    def inbox_prefix(self) -> str:
        return f"_INBOX_{self.name}"


def users_for(clusters: Iterable[str]) -> list[ClusterUser]:
    return [
        ClusterUser(service, check_cluster_name(cluster))
        for cluster in clusters
        for service in ("agent", "bouncer")
    ]


def permissions(user: ClusterUser) -> dict[str, object]:
    """Least privilege for one per-cluster service user."""
    durable = user.name
    api = "$JS.API"
    publish = [
        f"meshtrust.v1.{user.cluster}.>",
        f"{api}.INFO",
        # its own durable consumer on the event stream
        f"{api}.STREAM.INFO.{STREAM}",
        f"{api}.STREAM.INFO.{KV_STREAM}",  # Bus.provision checks the buckets exist
        f"{api}.STREAM.MSG.GET.{STREAM}",
        f"{api}.CONSUMER.CREATE.{STREAM}.{durable}",
        f"{api}.CONSUMER.CREATE.{STREAM}.{durable}.>",
        f"{api}.CONSUMER.DURABLE.CREATE.{STREAM}.{durable}",
        f"{api}.CONSUMER.INFO.{STREAM}.{durable}",
        f"{api}.CONSUMER.MSG.NEXT.{STREAM}.{durable}",
        f"$JS.ACK.{STREAM}.{durable}.>",
        # its completion records (shared.bus.completions)
        f"meshtrust.consumed.{durable}",
        f"{api}.STREAM.INFO.{RECORDS}",
        f"{api}.CONSUMER.CREATE.{RECORDS}.*.meshtrust.consumed.{durable}",
        f"{api}.CONSUMER.INFO.{RECORDS}.*",
        f"{api}.CONSUMER.MSG.NEXT.{RECORDS}.*",
        f"{api}.CONSUMER.DELETE.{RECORDS}.*",
    ]
    if user.service == "agent":
        # its cluster's desired state: an ephemeral pull consumer on the KV stream whose
        # filter (part of the create subject) is its cluster's keys (shared.bus.kv)
        publish += [
            f"{api}.CONSUMER.CREATE.{KV_STREAM}.*.$KV.{DESIRED_BUCKET}.{user.cluster}.>",
            f"{api}.CONSUMER.INFO.{KV_STREAM}.*",
            f"{api}.CONSUMER.MSG.NEXT.{KV_STREAM}.*",
            f"{api}.CONSUMER.DELETE.{KV_STREAM}.*",
        ]
    return {
        "publish": {"allow": publish},
        "subscribe": {"allow": [f"{user.inbox_prefix}.>"]},
    }


def auditor_permissions() -> dict[str, object]:
    """Read-only: ephemeral consumers on the event stream and the ledger, nothing published."""
    api = "$JS.API"
    publish = [f"{api}.INFO"]
    for stream in (STREAM, LEDGER):
        publish += [
            f"{api}.STREAM.INFO.{stream}",
            f"{api}.CONSUMER.CREATE.{stream}",
            f"{api}.CONSUMER.CREATE.{stream}.>",
            f"{api}.CONSUMER.INFO.{stream}.*",
            f"{api}.CONSUMER.MSG.NEXT.{stream}.*",
            f"{api}.CONSUMER.DELETE.{stream}.*",
        ]
    return {"publish": {"allow": publish}, "subscribe": {"allow": [f"{AUDITOR_INBOX}.>"]}}


def render(
    *,
    clusters: Iterable[str],
    passwords: Mapping[str, str] | None = None,
    nkeys: Mapping[str, str] | None = None,
    host: str = "127.0.0.1",
    port: int = 4222,
    store_dir: str | None = None,
) -> str:
    """The nats-server configuration (JSON) for `clusters`.

    Each user authenticates either with a password (`passwords`: user -> password; the local
    stack) or with an nkey (`nkeys`: user -> public key, `U...`; production: the config then
    holds no secret, and each service gets only its own seed file).
    """
    if (passwords is None) == (nkeys is None):
        raise ValueError("give either passwords or nkeys")

    def credential(user: str) -> dict[str, object]:
        if nkeys is not None:
            return {"nkey": nkeys[user]}
        assert passwords is not None
        return {"user": user, "password": passwords[user]}

    users: list[dict[str, object]] = [
        credential(ISSUER_USER),
        {**credential(AUDITOR_USER), "permissions": auditor_permissions()},
    ]
    users += [{**credential(u.name), "permissions": permissions(u)} for u in users_for(clusters)]
    config: dict[str, object] = {
        "host": host,
        "port": port,
        "authorization": {"users": users},
        "jetstream": {"store_dir": store_dir} if store_dir else {},
    }
    return json.dumps(config, indent=2) + "\n"


def user_names(clusters: Iterable[str]) -> list[str]:
    return [ISSUER_USER, AUDITOR_USER, *(u.name for u in users_for(clusters))]
