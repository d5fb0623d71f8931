"""`meshtrust demo`: the main job end to end on the local stack (see `devstack.demo`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cli.stack import DEFAULT_ROOT, remote_names
from devstack.demo import run as run_demo
from devstack.stack import StackError

HELP = "issue intermediate CAs to emulated clusters end to end, verify, and show the result"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--clusters", type=int, default=2, help="remote clusters (default 2)")
    parser.add_argument(
        "--key-algorithm", choices=("ECDSA", "RSA"), default="ECDSA", help="the agents' keys"
    )
    parser.add_argument("--ttl", help="certificate lifetime, a Go duration such as 720h")
    parser.add_argument("--keep", action="store_true", help="leave the stack running")
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT, help="state directory")
    parser.add_argument("--timeout", type=float, default=180.0, help="seconds to FINISHED")


def run(args: argparse.Namespace) -> int:
    try:
        return run_demo(
            root=args.root,
            remotes=remote_names(args.clusters),
            key_algorithm=args.key_algorithm,
            ttl=args.ttl,
            keep=args.keep,
            timeout=args.timeout,
        )
    except StackError as exc:
        print(f"meshtrust demo: {exc}", file=sys.stderr)
        return 1
