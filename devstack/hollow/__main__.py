"""`python -m devstack.hollow --root DIR --clusters east-0..east-199[,west]`: one hollow process.

Runs the production agent and bouncer of each named cluster (`devstack.hollow.runner`) against
the stack recorded in `DIR/stack.json` (a `devstack.hollow.fleet.HollowFleet`'s root), until
SIGTERM or SIGINT. Logs JSON on stderr; its own health server's port is logged as the services
log theirs, and /readyz answers 200 once every cluster's agent and bouncer are ready.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import signal
from pathlib import Path

from devstack.hollow.runner import Hollow, HollowConfig
from devstack.hollow.watchdog import share_loop_watchdog
from devstack.stack import StackInfo
from shared.events import check_cluster_name
from shared.runtime import configure_logging, supervise
from shared.runtime.health import HealthServer, HealthSettings
from shared.runtime.logging import LoggingSettings
from shared.runtime.memory import freeze_start_up

RANGE = re.compile(r"^(?P<prefix>.*?)(?P<first>\d+)\.\.(?P=prefix)(?P<last>\d+)$")
GRACE = 30.0


def parse_clusters(text: str) -> tuple[str, ...]:
    """`a,b,east-0..east-2` -> (a, b, east-0, east-1, east-2); each a valid cluster name."""
    names: list[str] = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        if (match := RANGE.match(part)) is None:
            names.append(part)
            continue
        first, last = int(match["first"]), int(match["last"])
        if last < first:
            raise argparse.ArgumentTypeError(f"empty range {part!r}")
        width = len(match["first"]) if match["first"].startswith("0") else 0
        names += [f"{match['prefix']}{i:0{width}d}" for i in range(first, last + 1)]
    if not names:
        raise argparse.ArgumentTypeError("no clusters named")
    if len(set(names)) != len(names):
        raise argparse.ArgumentTypeError("a cluster is named twice")
    for name in names:
        try:
            check_cluster_name(name)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    return tuple(names)


async def serve(config: HollowConfig) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    hollow = Hollow(config)
    health = HealthServer(HealthSettings(host="127.0.0.1", port=0))
    health.add_check("clusters", hollow.ready)
    await supervise([health, hollow], grace=GRACE, stop=stop, handle_signals=False)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m devstack.hollow", description=__doc__)
    parser.add_argument("--root", type=Path, required=True, help="the fleet's state directory")
    parser.add_argument("--clusters", type=parse_clusters, required=True)
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning"])
    args = parser.parse_args(argv)
    info = StackInfo.load(args.root / "stack.json")
    config = HollowConfig(root=args.root.resolve(), nats_url=info.nats_url, clusters=args.clusters)
    configure_logging(LoggingSettings(level=args.log_level, format="json"))
    freeze_start_up()
    share_loop_watchdog()
    asyncio.run(serve(config))


if __name__ == "__main__":
    main()
