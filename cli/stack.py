"""`meshtrust devstack up|down|status|stop|start|restart`: the local stack, kept running.

`up` starts a supervisor process (`devstack.supervisor`) that brings up nats-server, the
emulated clusters `mgmt` + remotes and the services (see `devstack.stack`), restarts any of them
that dies, and keeps running after `up` returns; `up` on a stack that `down` stopped resumes it
(same clusters, root CA, certificates and JetStream). `down` stops it all and keeps that state;
`down --purge` wipes it. `status` shows each process's state, restarts, memory (RSS) and
uptime, and their total memory; `stop|start|restart SERVICE` (e.g. `agent-east`) act on one
process through the supervisor. `up --nats-nodes 3` runs three nats-server nodes in one
JetStream cluster (`nats-server-0..2`, every stream and bucket with three replicas;
`devstack.natscluster`) instead of one.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from devstack import processes, supervisor
from devstack.stack import StackError, kept_clusters, status

HELP = (
    "run the local stack (nats-server, emulated clusters, services), supervised: "
    "up, down [--purge], status, stop|start|restart SERVICE"
)
DEFAULT_ROOT = Path(".devstack")
ACTIONS = ("up", "down", "status", *supervisor.ACTIONS)


def remote_names(count: int) -> list[str]:
    """east, west, then c2, c3, ... for more."""
    names = ["east", "west"]
    return names[:count] if count <= len(names) else names + [f"c{i}" for i in range(2, count)]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=ACTIONS)
    parser.add_argument(
        "service", nargs="?", help="stop|start|restart: a process, e.g. issuer, agent-east"
    )
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT, help="state directory")
    parser.add_argument(
        "--clusters", type=int, help="remote clusters (up; default: the kept state's, else 2)"
    )
    parser.add_argument(
        "--nats-nodes",
        type=int,
        help="up: NATS servers in one JetStream cluster, 3 for a replicated bus "
        "(default: the kept state's, else 1)",
    )
    parser.add_argument(
        "--purge", action="store_true", help="down: also wipe the clusters, root CA, JetStream"
    )


def run(args: argparse.Namespace) -> int:
    try:
        if args.action == "up":
            return _up(args)
        if args.action == "down":
            stopped = supervisor.shutdown(args.root, purge=args.purge)
            print("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))
            if args.purge:
                print(f"wiped {args.root}")
            elif kept_clusters(args.root) is not None:
                print(f"state kept in {args.root}: `up` resumes it, `down --purge` wipes it")
            return 0
        if args.action == "status":
            return _status(args.root)
        if not args.service:
            print(f"meshtrust devstack {args.action}: name a SERVICE", file=sys.stderr)
            return 2
        print(supervisor.request(args.root, args.action, args.service))
        return 0
    except StackError as exc:
        print(f"meshtrust devstack {args.action}: {exc}", file=sys.stderr)
        return 1


def _up(args: argparse.Namespace) -> int:
    kept = kept_clusters(args.root)
    remotes = remote_names(args.clusters) if args.clusters is not None else kept
    info = supervisor.launch(
        args.root, remotes=remotes or remote_names(2), nats_nodes=args.nats_nodes
    )
    print(("resumed" if kept else "started") + f"; NATS {info.nats_url}")
    for name, cluster in info.clusters.items():
        print(f"{name:<8} {cluster.get('url', '')}  kubeconfig {cluster['kubeconfig']}")
    print(f"logs in {args.root / 'logs'}; stop with: meshtrust devstack down")
    return 0


def _status(root: Path) -> int:
    state = supervisor.read(root)
    if state is None or state.get("phase") == "down":
        alive = status(root)  # a stack run by a program (tests), without a supervisor
        if not alive:
            print("no local stack recorded")
            return 1
        for name, up in alive.items():
            print(f"{name:<14} {'running' if up else 'not running'}")
        return 0 if all(alive.values()) else 1
    pid = supervisor.running(root)
    print(f"supervisor: {state['phase']}" + (f" (pid {pid})" if pid else ", NOT RUNNING"))
    rows = [("NAME", "STATE", "PID", "RESTARTS", "RSS", "UPTIME", "LAST EXIT")]
    healthy = pid is not None
    now = time.time()
    for entry in state["processes"]:
        current = entry["state"]
        rss = processes.rss_bytes(entry["pid"]) if current == "running" else None
        if current == "running" and rss is None:
            current = "dead"  # the supervisor has not seen it yet, or is gone itself
        healthy = healthy and current in {"running", "stopped"}
        rows.append(
            (
                entry["name"],
                current,
                str(entry["pid"]) if current == "running" else "-",
                str(entry["restarts"]),
                f"{rss / 2**20:.0f}MiB" if rss is not None else "-",
                _duration(now - entry["started_at"]) if current == "running" else "-",
                entry["last_exit"] or "-",
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    sizes = supervisor.resident(root)
    print(f"RSS {sum(sizes.values()) / 2**20:.0f} MiB in total, {len(sizes)} processes")
    return 0 if healthy else 1


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"
