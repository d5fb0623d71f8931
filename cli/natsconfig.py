"""`meshtrust nats-config`: the nats-server configuration for a list of clusters.

One NATS account per identity (`devstack.natsconfig`): the agent of `east` may publish only
east's `csr.requested`, `status.changed` and `bounce.requested`, pull only its own consumers and
read only what the hub exports to it; the bouncer only east's `bounce.completed`; the auditor
reads only; the issuer may not delete or purge streams; the provisioner creates them. Users
authenticate with nkeys: the configuration printed holds only public keys, and one seed file per
user is written (mode 600) to `--credentials-dir`, to be handed to that identity only (as
`MESHTRUST_NATS_NKEYS_SEED_FILE`, with `MESHTRUST_NATS_INBOX_PREFIX=_INBOX_<user>` for the
per-cluster ones). Existing seed files are kept, so re-running after adding a cluster changes
nobody else's credentials. `--routes` makes it one node of a JetStream cluster: the `cluster`
block every node gets (`devstack.natsconfig.cluster_block`, as the local stack's and
deploy/nats/'s), listening for routes on `--cluster-port`; give every node the same routes
(its own is ignored) and its own `server_name` (`--server-name`).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from devstack.natsconfig import (
    ISSUER_USER,
    cluster_block,
    nkeys_for,
    render,
    seed_for,
    user_names,
    users_for,
)
from shared.events import InvalidName

__all__ = ["HELP", "add_arguments", "run", "seed_for"]

HELP = "print the nats-server configuration (per-cluster users and permissions)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--clusters", required=True, help="remote clusters, comma-separated")
    parser.add_argument("--credentials-dir", required=True, type=Path, help="where seeds go")
    parser.add_argument("--host", default="0.0.0.0", help="listen address")  # noqa: S104
    parser.add_argument("--port", type=int, default=4222)
    parser.add_argument("--store-dir", default="/data/jetstream", help="JetStream store")
    parser.add_argument(
        "--routes", help="a clustered node: every node's route URL, comma-separated"
    )
    parser.add_argument("--cluster-name", default="meshtrust", help="with --routes")
    parser.add_argument("--cluster-port", type=int, default=6222, help="with --routes")
    parser.add_argument("--server-name", help="this node's name (unique in the cluster)")


def run(args: argparse.Namespace) -> int:
    clusters = [c.strip() for c in args.clusters.split(",") if c.strip()]
    try:
        names = user_names(clusters)
    except InvalidName as exc:
        print(f"meshtrust nats-config: {exc}", file=sys.stderr)
        return 2
    routes = [r.strip() for r in (args.routes or "").split(",") if r.strip()]
    if routes and not args.server_name:
        print("meshtrust nats-config: --routes needs --server-name", file=sys.stderr)
        return 2
    public = nkeys_for(args.credentials_dir, names)
    cluster = None
    if routes:
        cluster = cluster_block(
            name=args.cluster_name, host=args.host, port=args.cluster_port, routes=routes
        )
    text = render(
        clusters=clusters,
        nkeys=public,
        host=args.host,
        port=args.port,
        store_dir=args.store_dir,
        cluster=cluster,
    )
    if args.server_name:
        text = json.dumps({"server_name": args.server_name, **json.loads(text)}, indent=2) + "\n"
    sys.stdout.write(text)
    inboxes = ", ".join(f"{u.name}: {u.inbox_prefix}" for u in users_for(clusters))
    print(
        f"# seeds in {args.credentials_dir}/<user>.nk for {ISSUER_USER} and {len(names) - 1} "
        f"cluster users; inbox prefixes: {inboxes}",
        file=sys.stderr,
    )
    return 0
