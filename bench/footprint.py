"""Footprint of the services: resident memory and start-up CPU, and where they go.

Three measurements, each in fresh processes of this run:

1. imports: each service's entry point imported alone in a fresh interpreter (RSS, its private
   part RssAnon, CPU), as the services import it (kubernetes-asyncio's generated classes left
   out, `shared.k8s.lightimport`) and with the library imported eagerly first (what it was);
2. where it goes: the agent's imports one package after another in one fresh interpreter, the
   RSS and CPU each adds (the first import of a package pays for what it shares with later ones);
3. running: a one-cluster local stack (`devstack.stack.Stack`), each process's RSS and CPU once
   all are ready (the start-up CPU) and again after `--idle` seconds (idle RSS).

No floor and no ratio: these are sizes, compared with the targets (agent and bouncer <= 60 MiB
RSS idle, <= 0.5 s CPU to start). Takes ~30 s:

    .venv/bin/python bench/footprint.py [--idle 10]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from devstack import processes
from devstack.stack import Stack

SERVICES = ("agent", "bouncer", "issuer")
TARGET_RSS_MIB = 60.0
TARGET_CPU_SECONDS = 0.5

# The agent's imports in the order they first come in, third-party first.
STEPS = (
    "asyncio",
    "aiohttp",
    "nats",
    "cryptography.x509",
    "pydantic",
    "pydantic_settings",
    "structlog",
    "prometheus_client",
    "yaml",
    "shared.k8s",  # with kubernetes_asyncio's core (lightly: its generated classes left out)
    "shared.bus",
    "shared.pki",
    "services.agent.__main__",
)

MEASURE = """
import json, os, sys, time, importlib
def now():
    m = {l.split(":")[0]: int(l.split()[1]) for l in open("/proc/self/status")
         if l.startswith(("VmRSS", "RssAnon"))}
    return m["VmRSS"], m["RssAnon"], time.process_time()
steps = json.loads(sys.argv[1])
out = [("python", *now())]
for step in steps:
    importlib.import_module(step)
    out.append((step, *now()))
print(json.dumps(out))
"""


def imports(steps: list[str]) -> list[tuple[str, int, int, float]]:
    """Import `steps` in order in a fresh interpreter: (step, VmRSS KiB, RssAnon KiB, CPU s)
    after each, the first row being the bare interpreter."""
    done = subprocess.run(
        [sys.executable, "-c", MEASURE, json.dumps(steps)],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return [(str(s), int(r), int(a), float(c)) for s, r, a, c in json.loads(done.stdout)]


def mib(kib: float) -> str:
    return f"{kib / 1024:6.1f} MiB"


def print_imports() -> None:
    print("1. imports alone (fresh interpreter each):")
    print(f"   {'service':<9} {'RSS':>10} {'private':>10} {'CPU':>7}   eager kubernetes_asyncio")
    for service in SERVICES:
        entry = f"services.{service}.__main__"
        _, rss, anon, cpu = imports([entry])[-1]
        _, e_rss, e_anon, e_cpu = imports(["kubernetes_asyncio", entry])[-1]
        print(
            f"   {service:<9} {mib(rss)} {mib(anon)} {cpu:6.2f}s   "
            f"{mib(e_rss)} {mib(e_anon)} {e_cpu:6.2f}s"
        )


def print_breakdown() -> None:
    print("2. where the agent's import goes (each step adds):")
    rows = imports(list(STEPS))
    previous = rows[0]
    print(f"   {'python itself':<40} {mib(previous[1])} {mib(previous[2])} {previous[3]:6.2f}s")
    for row in rows[1:]:
        step, rss, anon, cpu = row
        print(
            f"   {step:<40} {mib(rss - previous[1])} {mib(anon - previous[2])} "
            f"{cpu - previous[3]:6.2f}s"
        )
        previous = row
    print(f"   {'total':<40} {mib(previous[1])} {mib(previous[2])} {previous[3]:6.2f}s")


def print_running(idle: float) -> dict[str, tuple[float, float]]:
    """The one-cluster stack's processes: {service: (idle RSS MiB, start-up CPU s)}."""
    print(f"3. a one-cluster stack: at ready, then after {idle:.0f} s idle:")
    with tempfile.TemporaryDirectory(prefix="meshtrust-footprint-") as tmp:
        stack = Stack(Path(tmp) / "devstack", remotes=["east"], pod_ready_delay=0.05)
        try:
            info = stack.up()
            pids = {p.name: p.pid for p in info.processes if p.name not in {"nats-server"}}
            at_ready = {
                n: (processes.cpu_seconds(p), processes.memory_kib(p)) for n, p in pids.items()
            }
            time.sleep(idle)  # a measurement window, not a synchronisation
            later = {n: processes.memory_kib(p) for n, p in pids.items()}
        finally:
            stack.down(purge=True)
    result = {}
    heading = ("process", "CPU to ready", "RSS ready", "RSS idle", "private")
    print("   {:<14} {:>12} {:>10} {:>10} {:>10}".format(*heading))
    for name, (cpu, memory) in at_ready.items():
        idle_memory = later[name]
        print(
            f"   {name:<14} {cpu or 0:11.2f}s {mib(memory.get('VmRSS', 0))} "
            f"{mib(idle_memory.get('VmRSS', 0))} {mib(idle_memory.get('RssAnon', 0))}"
        )
        result[name.split("-")[0]] = (idle_memory.get("VmRSS", 0) / 1024, cpu or 0.0)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--idle", type=float, default=10.0, help="seconds idle before measuring")
    args = parser.parse_args()
    print_imports()
    print_breakdown()
    running = print_running(args.idle)
    parts = [
        f"{service} {running[service][0]:.0f} MiB idle, {running[service][1]:.2f} s CPU to ready"
        for service in ("agent", "bouncer")
        if service in running
    ]
    print(
        f"footprint: {'; '.join(parts)} (targets {TARGET_RSS_MIB:.0f} MiB, {TARGET_CPU_SECONDS} s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
