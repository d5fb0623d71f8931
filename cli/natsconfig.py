"""`meshtrust nats-config`: the nats-server configuration for a list of clusters.

Per-cluster users with least privilege (`devstack.natsconfig.permissions`): the agent and the
bouncer of `east` may publish only `meshtrust.v1.east.>`, use only their own consumers and read
only east's desired state; the issuer may do everything. Users authenticate with nkeys: the
configuration printed holds only public keys, and one seed file per user is written (mode 600)
to `--credentials-dir`, to be handed to that service only (as `MESHTRUST_NATS_NKEYS_SEED_FILE`,
with `MESHTRUST_NATS_INBOX_PREFIX=_INBOX_<user>`). Existing seed files are kept, so re-running
after adding a cluster changes nobody else's credentials.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import nkeys

from devstack.natsconfig import ISSUER_USER, render, user_names, users_for
from shared.events import InvalidName

HELP = "print the nats-server configuration (per-cluster users and permissions)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--clusters", required=True, help="remote clusters, comma-separated")
    parser.add_argument("--credentials-dir", required=True, type=Path, help="where seeds go")
    parser.add_argument("--host", default="0.0.0.0", help="listen address")  # noqa: S104
    parser.add_argument("--port", type=int, default=4222)
    parser.add_argument("--store-dir", default="/data/jetstream", help="JetStream store")


def seed_for(directory: Path, user: str) -> bytes:
    """The user's nkey seed, made once and kept in `<directory>/<user>.nk` (mode 600)."""
    path = directory / f"{user}.nk"
    if path.exists():
        return path.read_bytes().strip()
    seed = bytes(nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER))
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as file:
        file.write(seed + b"\n")
    return seed


def run(args: argparse.Namespace) -> int:
    clusters = [c.strip() for c in args.clusters.split(",") if c.strip()]
    try:
        names = user_names(clusters)
    except InvalidName as exc:
        print(f"meshtrust nats-config: {exc}", file=sys.stderr)
        return 2
    args.credentials_dir.mkdir(parents=True, exist_ok=True)
    public = {
        user: nkeys.from_seed(bytearray(seed_for(args.credentials_dir, user))).public_key.decode()
        for user in names
    }
    sys.stdout.write(
        render(
            clusters=clusters,
            nkeys=public,
            host=args.host,
            port=args.port,
            store_dir=args.store_dir,
        )
    )
    inboxes = ", ".join(f"{u.name}: {u.inbox_prefix}" for u in users_for(clusters))
    print(
        f"# seeds in {args.credentials_dir}/<user>.nk for {ISSUER_USER} and {len(names) - 1} "
        f"cluster users; inbox prefixes: {inboxes}",
        file=sys.stderr,
    )
    return 0
