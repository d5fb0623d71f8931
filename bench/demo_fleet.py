"""Fleet benchmark: `meshtrust demo --clusters N` (default 50) on this machine, as a user runs it.

Runs the demo as a subprocess (`--keep`, in a fresh state directory), reads its output as it
comes, and prints:

- start-up: the demo's own "stack up in S s" (nats-server, N + 1 emulated clusters, the issuer,
  N agents and N bouncers, all ready);
- to all FINISHED: the largest time the demo printed for a cluster's FINISHED (from the first
  declaration), how many clusters reached it, and the median cluster's time;
- memory: the resident memory (VmRSS) of every stack process the supervisor records, in total
  and per kind of process (the same figure as `meshtrust devstack status`'s RSS column),
  measured once every cluster is FINISHED (the stack is kept for that), then the stack is
  stopped and its state wiped.

No floor, no ratio: this is a capacity figure (issue 17: 50 clusters on a 2-core machine; issue
20: 100), not a comparison. It takes minutes at N=50 and is not part of `make bench`:

    .venv/bin/python bench/demo_fleet.py [--clusters 50] [--timeout 900]
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from devstack import supervisor

STACK_UP = re.compile(r"stack up in ([0-9.]+)s")
STATE_LINE = re.compile(r"^\s+([0-9.]+)s\s+(\S+)\s+(\S+)\s*$")
KINDS = ("agent-", "bouncer-", "kubeapi-", "issuer", "nats")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clusters", type=int, default=50)
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds to FINISHED")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="meshtrust-fleet-") as tmp:
        root = Path(tmp) / "devstack"
        try:
            return _run(root, clusters=args.clusters, timeout=args.timeout)
        finally:
            _meshtrust("devstack", "down", "--purge", "--root", str(root))


def _run(root: Path, *, clusters: int, timeout: float) -> int:
    command = ["demo", "--keep", "--clusters", str(clusters), "--timeout", str(timeout)]
    began = time.monotonic()
    demo = subprocess.Popen(
        [_meshtrust_path(), *command, "--root", str(root)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert demo.stdout is not None
    stack_up: float | None = None
    finished: dict[str, float] = {}
    for line in demo.stdout:
        if (up := STACK_UP.search(line)) is not None:
            stack_up = float(up.group(1))
        elif (state := STATE_LINE.match(line)) is not None and state.group(3) == "FINISHED":
            finished[state.group(2)] = float(state.group(1))
    code = demo.wait()
    wall = time.monotonic() - began
    rss = supervisor.resident(root)
    print(f"clusters: {clusters}; demo exit code {code}; wall time {wall:.1f}s")
    print(f"start-up (stack up): {_seconds(stack_up)}")
    slowest = max(finished.values()) if finished else None
    median = statistics.median(finished.values()) if finished else None
    print(
        f"to all FINISHED: {_seconds(slowest)} ({len(finished)}/{clusters} FINISHED; "
        f"median cluster {_seconds(median)})"
    )
    total = sum(rss.values())
    print(f"RSS of the stack's processes: {total / 2**20:.0f} MiB in total")
    for kind, (count, size) in sorted(_by_kind(rss).items()):
        print(f"  {kind:<10} {count:>3} processes  {size / 2**20:7.0f} MiB  ", end="")
        print(f"({size / count / 2**20:.0f} MiB each)")
    return 0 if code == 0 and len(finished) == clusters else 1


def _by_kind(rss: dict[str, int]) -> dict[str, tuple[int, int]]:
    kinds: dict[str, list[int]] = defaultdict(list)
    for name, size in rss.items():
        kind = next((k.rstrip("-") for k in KINDS if name.startswith(k)), name)
        kinds[kind].append(size)
    return {kind: (len(sizes), sum(sizes)) for kind, sizes in kinds.items()}


def _seconds(value: float | None) -> str:
    return "not reached" if value is None else f"{value:.1f}s"


def _meshtrust_path() -> str:
    return str(Path(sys.executable).with_name("meshtrust"))


def _meshtrust(*args: str) -> None:
    subprocess.run(
        [_meshtrust_path(), *args], check=False, stdout=subprocess.DEVNULL, stderr=sys.stderr
    )


if __name__ == "__main__":
    sys.exit(main())
