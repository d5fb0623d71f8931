"""nats-server configuration: one NATS account per identity, the hub exporting only what each needs.

The model (docs/bus.md has the threat model and the tests that prove it):

- Account `MESHTRUST`, the hub, is the only one with JetStream: every stream, bucket and
  consumer lives there. Its users are the `issuer` (which may not delete or purge streams,
  nor change the ledger's configuration) and the `provisioner` (creates and updates streams
  and buckets; run as a separate step, never by a service).
- Every other identity has an account of its own, with no JetStream: `agent-<cluster>`,
  `bouncer-<cluster>` and `auditor`. Its user can reach the hub only through the services the
  hub exports to that one account, each a subject with nothing left to choose:
  - agent-C: publish C's `csr.requested`, `status.changed`, `bounce.requested`; pull and ack
    its durables `agent-C` (events) and `desired-C` (its cluster's desired state); publish its
    completion records; direct gets of the desired-state bucket and of the record stream;
    write its own key `C` of the reports bucket (`$KV.meshtrust-reports.C`);
  - bouncer-C: publish C's `bounce.completed`; pull and ack `bouncer-C`; its records;
  - auditor: direct gets of the event stream and of the ledger. Nothing else.
- JetStream answers API requests (create, change or delete a consumer or a stream) only from
  its own account, so no identity but the hub's can create, reconfigure or delete anything; the
  hub makes the clusters' durables (`shared.bus.fleet`).
- A publish's reply subject lives in the publisher's account. JetStream's acknowledgement of a
  publish from C goes back to C's account, where no stream captures anything: a reply subject
  aimed at the ledger, a KV key or another cluster's records lands nowhere.

Users authenticate with nkeys (the configuration holds public keys only) or, for
docker-compose.yml's throwaway stack, passwords. Each user keeps its inbox prefix
(`_INBOX_<user>`) as defence in depth; within its own account it is the only subscriber anyway.

The output is JSON, which nats-server reads as configuration, so no value needs escaping.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import nkeys

from shared.bus.fleet import (
    AGENT_PUBLISHES,
    BOUNCER_PUBLISHES,
    DESIRED_STREAM,
    STREAM,
    agent_durable,
    bouncer_durable,
    desired_durable,
)
from shared.events import EventType, check_cluster_name, subject
from shared.events.reports import REPORTS_BUCKET

RECORDS = "MESHTRUST_CONSUMED"
LEDGER = "MESHTRUST_LEDGER"
KV_STREAM = DESIRED_STREAM
HUB_ACCOUNT = "MESHTRUST"
ISSUER_USER = "issuer"
PROVISIONER_USER = "provisioner"
"""Creates and updates the streams and buckets (`meshtrust nats-provision`); no service uses it."""
AUDITOR_USER = "auditor"
"""Reads the event stream and the ledger by direct get, nothing else (`meshtrust audit`,
`meshtrust ledger`)."""
HUB_USERS = (ISSUER_USER, PROVISIONER_USER)


def inbox_prefix(user: str) -> str:
    """The reply-subject prefix `user` connects with (`MESHTRUST_NATS_INBOX_PREFIX`) and may
    subscribe to: its own, except the hub's users, which keep nats-py's default."""
    return "_INBOX" if user in HUB_USERS else f"_INBOX_{user}"


AUDITOR_INBOX = inbox_prefix(AUDITOR_USER)
API = "$JS.API"

ISSUER_DENIED = (
    f"{API}.STREAM.DELETE.>",
    f"{API}.STREAM.PURGE.>",
    f"{API}.STREAM.MSG.DELETE.>",
    f"{API}.STREAM.UPDATE.{LEDGER}",
    f"{API}.STREAM.CREATE.>",
    f"{API}.STREAM.UPDATE.>",
)
"""What the running issuer may not do in the hub: delete, purge or reconfigure any stream (the
ledger and the audit log above all), or delete single messages. Provisioning is the
provisioner's."""


@dataclass(frozen=True)
class ClusterUser:
    """A per-cluster service identity: `agent-east`, `bouncer-east` (user and account)."""

    service: str
    cluster: str

    @property
    def name(self) -> str:
        return f"{self.service}-{self.cluster}"

    @property
    def inbox_prefix(self) -> str:
        return inbox_prefix(self.name)


def users_for(clusters: Iterable[str]) -> list[ClusterUser]:
    return [
        ClusterUser(service, check_cluster_name(cluster))
        for cluster in clusters
        for service in ("agent", "bouncer")
    ]


def _pull(stream: str, durable: str) -> list[tuple[str, str]]:
    """(subject, response type) to fetch from and acknowledge one durable across accounts."""
    return [
        (f"{API}.CONSUMER.MSG.NEXT.{stream}.{durable}", "stream"),
        (f"$JS.ACK.{stream}.{durable}.>", "singleton"),
    ]


def _direct(stream: str) -> tuple[str, str]:
    return (f"{API}.DIRECT.GET.{stream}", "stream")


def imports_of(user: ClusterUser) -> list[tuple[str, str]]:
    """Everything one cluster identity may reach in the hub: (subject, response type)."""
    cluster = user.cluster
    events: tuple[EventType, ...]
    if user.service == "agent":
        events = AGENT_PUBLISHES
        durables = [(STREAM, agent_durable(cluster)), (KV_STREAM, desired_durable(cluster))]
        # Its own report key, and no other (a KV put is a publish to `$KV.<bucket>.<key>`).
        reads = [_direct(KV_STREAM), (report_subject(cluster), "singleton")]
    else:
        events = BOUNCER_PUBLISHES
        durables = [(STREAM, bouncer_durable(cluster))]
        reads = []
    services = [(subject(cluster, event), "singleton") for event in events]
    for stream, durable in durables:
        services += _pull(stream, durable)
    # Its completion records (shared.bus.completions): written, and read back by direct get.
    durable = durables[0][1]
    services += [(f"meshtrust.consumed.{durable}", "singleton"), _direct(RECORDS), *reads]
    return services


def report_subject(cluster: str) -> str:
    """The one subject through which `cluster`'s agent writes its report (shared.events.reports)."""
    return f"$KV.{REPORTS_BUCKET}.{check_cluster_name(cluster)}"


def auditor_imports() -> list[tuple[str, str]]:
    return [_direct(STREAM), _direct(LEDGER)]


def permissions(user: ClusterUser) -> dict[str, object]:
    """Defence in depth inside the identity's own account: publish only what is imported."""
    return {
        "publish": {"allow": [name for name, _ in imports_of(user)]},
        "subscribe": {"allow": [f"{user.inbox_prefix}.>"]},
    }


def auditor_permissions() -> dict[str, object]:
    return {
        "publish": {"allow": [name for name, _ in auditor_imports()]},
        "subscribe": {"allow": [f"{AUDITOR_INBOX}.>"]},
    }


def issuer_permissions() -> dict[str, object]:
    return {"publish": {"deny": list(ISSUER_DENIED)}}


def render(
    *,
    clusters: Iterable[str],
    passwords: Mapping[str, str] | None = None,
    nkeys: Mapping[str, str] | None = None,
    host: str = "127.0.0.1",
    port: int = 4222,
    store_dir: str | None = None,
    cluster: Mapping[str, object] | None = None,
) -> str:
    """The nats-server configuration (JSON) for `clusters`; `cluster` (`cluster_block`) makes
    it one node of a JetStream cluster.

    Each user authenticates either with a password (`passwords`: user -> password;
    docker-compose.yml's throwaway stack) or with an nkey (`nkeys`: user -> public key, `U...`;
    the local stack and production: the configuration then holds no secret, and each service
    gets only its own seed file).
    """
    clusters = list(clusters)
    credential = _credentials(passwords=passwords, nkeys=nkeys)
    # account -> (its user's permissions, what it imports from the hub)
    grants = {user.name: (permissions(user), imports_of(user)) for user in users_for(clusters)}
    grants[AUDITOR_USER] = (auditor_permissions(), auditor_imports())
    accounts = {
        account: {
            "users": [{**credential(account), "permissions": allowed}],
            "imports": [
                {"service": {"account": HUB_ACCOUNT, "subject": name}} for name, _ in services
            ],
        }
        for account, (allowed, services) in grants.items()
    }
    hub: dict[str, object] = {
        "jetstream": "enabled",
        "users": [
            {**credential(ISSUER_USER), "permissions": issuer_permissions()},
            credential(PROVISIONER_USER),
        ],
        "exports": _exports({account: services for account, (_, services) in grants.items()}),
    }
    config: dict[str, object] = {
        "host": host,
        "port": port,
        "accounts": {HUB_ACCOUNT: hub, **accounts},
        "jetstream": {
            **({"store_dir": store_dir} if store_dir else {}),
            "limits": {"default_max_consumers": consumer_limit(len(clusters))},
        },
    }
    if cluster is not None:
        config["cluster"] = dict(cluster)
    return json.dumps(config, indent=2) + "\n"


CONSUMERS_PER_CLUSTER = 4
"""Durables a cluster puts on the event stream: the issuer's `csr-<c>`, `agent-<c>`,
`bouncer-<c>`, and one to spare (a consumer being replaced)."""


def consumer_limit(clusters: int) -> int:
    """Each stream's consumer limit for a fleet of `clusters`: nats-server caps a stream at
    1,000 consumers unless its configuration says otherwise (`default_max_consumers`), which
    a fleet of more than 333 clusters exceeds ("maximum consumers limit reached" when the
    clusters' durables are made). Regenerate the configuration as clusters are added."""
    return max(1000, CONSUMERS_PER_CLUSTER * clusters + 100)


def cluster_block(*, name: str, host: str, port: int, routes: Iterable[str]) -> dict[str, object]:
    """One node's `cluster` block: where it listens for routes and the peers it routes to.

    The same block makes the local stack's nodes (`devstack.natscluster`, routes on loopback)
    and the production StatefulSet's (deploy/nats/generate.py, which adds TLS for routes).
    Every node of a JetStream cluster needs the same `name` and its own `server_name`; a node
    may list itself among the routes (it ignores that one), so every node can get one list.
    """
    return {"name": name, "host": host, "port": port, "routes": list(routes)}


def _credentials(
    *, passwords: Mapping[str, str] | None, nkeys: Mapping[str, str] | None
) -> Callable[[str], dict[str, object]]:
    """user -> how it authenticates: exactly one of `passwords` and `nkeys` is given."""
    if nkeys is not None and passwords is None:
        public = nkeys
        return lambda user: {"nkey": public[user]}
    if passwords is not None and nkeys is None:
        secrets = passwords
        return lambda user: {"user": user, "password": secrets[user]}
    raise ValueError("give either passwords or nkeys")


def _exports(imports: Mapping[str, list[tuple[str, str]]]) -> list[dict[str, object]]:
    """The hub's exports: every (subject, response type) an account imports, to exactly the
    accounts that import it."""
    exports: dict[str, tuple[str, set[str]]] = defaultdict(lambda: ("singleton", set()))
    for account, services in imports.items():
        for name, response in services:
            exports[name] = (response, exports[name][1] | {account})
    return [
        {"service": name, "response_type": response, "accounts": sorted(allowed)}
        for name, (response, allowed) in sorted(exports.items())
    ]


def user_names(clusters: Iterable[str]) -> list[str]:
    return [
        ISSUER_USER,
        PROVISIONER_USER,
        AUDITOR_USER,
        *(u.name for u in users_for(clusters)),
    ]


def seed_for(directory: Path, user: str) -> bytes:
    """The user's nkey seed, made once and kept in `<directory>/<user>.nk` (mode 600, in a
    directory only its owner may enter)."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    directory.chmod(0o700)
    path = directory / f"{user}.nk"
    if path.exists():
        return path.read_bytes().strip()
    seed = bytes(nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER))
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as file:
        file.write(seed + b"\n")
    return seed


def public_key(seed: bytes) -> str:
    return str(nkeys.from_seed(bytearray(seed)).public_key.decode())


def nkeys_for(directory: Path, users: Iterable[str]) -> dict[str, str]:
    """user -> public nkey, making each user's seed file in `directory` when missing."""
    return {user: public_key(seed_for(directory, user)) for user in users}
