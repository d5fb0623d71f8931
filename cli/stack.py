"""`meshtrust devstack up|down|status`: the local stack, kept running between commands.

`up` starts nats-server, the emulated clusters `mgmt` + remotes and the services as separate
processes (see `devstack.stack`) and returns, leaving them running; `down` stops what
`.devstack/stack.json` records; `status` says which of those processes are alive.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from devstack.stack import Stack, StackError, status

HELP = "run the local stack (nats-server, emulated clusters, services): up, down, status"
DEFAULT_ROOT = Path(".devstack")


def remote_names(count: int) -> list[str]:
    """east, west, then c2, c3, ... for more."""
    names = ["east", "west"]
    return names[:count] if count <= len(names) else names + [f"c{i}" for i in range(2, count)]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=("up", "down", "status"))
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT, help="state directory")
    parser.add_argument("--clusters", type=int, default=2, help="remote clusters (up)")


def run(args: argparse.Namespace) -> int:
    stack = Stack(args.root, remotes=remote_names(args.clusters))
    if args.action == "up":
        try:
            info = stack.up()
        except StackError as exc:
            print(f"meshtrust devstack up: {exc}", file=sys.stderr)
            return 1
        print(f"NATS {info.nats_url}")
        for name, cluster in info.clusters.items():
            print(f"{name:<8} {cluster.get('url', '')}  kubeconfig {cluster['kubeconfig']}")
        print(f"logs in {args.root / 'logs'}; stop with: meshtrust devstack down")
        return 0
    if args.action == "down":
        stopped = stack.down()
        print("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))
        return 0
    alive = status(args.root)
    if not alive:
        print("no local stack recorded")
        return 1
    for name, up in alive.items():
        print(f"{name:<14} {'running' if up else 'not running'}")
    return 0 if all(alive.values()) else 1
