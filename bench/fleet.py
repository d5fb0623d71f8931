"""Fleet benchmark: N hollow clusters (`devstack.hollow`) declared at once, then re-issued at once.

For each N (default 100, 300 and 1,000), on a fresh `HollowFleet` (RSA-4096 root, ECDSA P-256
agent keys, the production issuer, agents and bouncers; the agents and bouncers multiplexed
into a few hollow processes):

- declare all N clusters' IssuedCertificate and PodBounceDirective in mgmt at once, and time
  until every remote IssuedCertificate is FINISHED (seen by watches on every cluster);
- the status mirror's lag: from a certificate FINISHED in its cluster to mgmt's declaration
  showing it FINISHED (median and maximum);
- a fleet-wide re-issue (every declaration's spec changed at once), timed the same way, with
  the issuer processes' CPU time (user + system, /proc) over it, per certificate, against the
  bare `cryptography` signing CPU of the same certificate measured in this run (bench/pki.py's
  `raw`): the signing ratio R = issuer CPU / (N x bare signing CPU);
- the RSS of nats-server and of the issuer(s).

The re-issue runs with the issuer's re-issue waves open (`--reissue-wave 0`): published to every
cluster at once, it measures the issuer's work; with the services' default (10 clusters at a
time) its wall time is the waves' pace, and its CPU includes the issuer's idle upkeep over it.

`--issuers 2` runs every N with one issuer and then with two replicas, and prints the speed-up.
`--profile DIR` then runs the largest N once more, its issuer under cProfile (the main thread's
CPU time), and prints the top of the profile; that run is in no other figure (the profiler
slows the issuer). The last line is
`fleet N=<largest>: all FINISHED in X s; signing ratio R; growth G`, X and R from the largest
N with one issuer, G = wall(largest) / ((largest / smallest) x wall(smallest)): 1.0 is linear
growth. Targets: R <= 1.5, G <= 1.2. Minutes at N = 1,000; not part of `make bench`:

    .venv/bin/python bench/fleet.py [--clusters 100 300 1000] [--issuers 2] [--profile DIR]
        [--reissue-wave 0] [--fetch-timeout T]
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import pstats
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pki

from devstack import processes
from devstack.hollow.fleet import HollowFleet
from devstack.hollow.follow import Observer, declare, reissue
from devstack.stack import MGMT
from shared.k8s.client import KubeClient
from shared.pki import KeyAlgorithm, KeySpec, generate_private_key
from shared.runtime import configure_logging
from shared.runtime.logging import LoggingSettings

ROOT_KEY = KeySpec(algorithm=KeyAlgorithm.RSA, size=4096)
AGENT_KEY = KeySpec(algorithm=KeyAlgorithm.ECDSA, size=256)
DECLARE_CONCURRENCY = 16
CLUSTERS_PER_HOLLOW = 250
CLUSTERS_PER_KUBEAPI = 500


@dataclass
class Run:
    clusters: int
    issuers: int
    up: float = 0.0
    declared: float = 0.0
    reissued: float = 0.0
    issuer_cpu: float = 0.0
    lag_median: float = 0.0
    lag_max: float = 0.0
    nats_rss: int = 0
    issuer_rss: int = 0
    hollow_rss: int = 0
    kubeapi_rss: int = 0


def bare_signing_cpu() -> float:
    """CPU seconds of one bare `cryptography` signing of the issued certificate (RSA-4096 CA,
    P-256 subject key), the median of 15 rounds of 5."""
    signer = pki.make_signer(ROOT_KEY, generate_private_key(AGENT_KEY))
    action = functools.partial(pki.raw, signer)
    return statistics.median(pki.timed(action, count=5) / 5 for _ in range(15))


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of `pid` (all its threads), from /proc."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clusters", type=int, nargs="+", default=[100, 300, 1000])
    parser.add_argument("--issuers", type=int, default=1, help="also run with this many issuers")
    parser.add_argument(
        "--profile",
        type=Path,
        help="then profile the issuer at the largest N; the profile goes here",
    )
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds per phase")
    parser.add_argument(
        "--reissue-wave",
        type=int,
        default=0,
        help="the issuer's MESHTRUST_ISSUER_REISSUE_WAVE (default here 0: the gate open, every "
        "re-issue published at once, so the re-issue measures the issuer's work, not the "
        "gate's pace; the services' default is 10 clusters at a time)",
    )
    parser.add_argument(
        "--fetch-timeout",
        type=float,
        help="the services' MESHTRUST_*_FETCH_TIMEOUT (default theirs: 10 s; an idle fleet of "
        "N clusters pulls about 4 N / T times a second)",
    )
    args = parser.parse_args()
    configure_logging(LoggingSettings(level="warning", format="console"))
    bare = bare_signing_cpu()
    print(f"bare signing CPU (RSA-4096 CA, P-256 key): {bare * 1000:.2f} ms", flush=True)
    runs: list[Run] = []
    for count in sorted(args.clusters):
        for issuers in sorted({1, args.issuers}):
            runs.append(Run(clusters=count, issuers=issuers))
            _fleet_run(runs[-1], args, profile=None)
            _print_run(runs[-1], bare)
    _print_table(runs, bare)
    if args.profile is not None:
        # A run of its own: the profiler slows the issuer's loop, so it is in no figure above.
        profiled = Run(clusters=max(args.clusters), issuers=1)
        args.profile.mkdir(parents=True, exist_ok=True)
        path = args.profile / f"issuer-{profiled.clusters}.prof"
        _fleet_run(profiled, args, profile=path)
        print("profiled run (not in the table): ", end="")
        _print_run(profiled, bare)
        _print_profile(path)
    print(_last_line(runs, bare))
    return 0


def _fleet_run(run: Run, args: argparse.Namespace, *, profile: Path | None) -> None:
    env: dict[str, dict[str, str]] = {
        "issuer": {"MESHTRUST_ISSUER_REISSUE_WAVE": str(args.reissue_wave)}
    }
    if (fetch := args.fetch_timeout) is not None:
        env["hollow"] = {f"MESHTRUST_{s}_FETCH_TIMEOUT": str(fetch) for s in ("AGENT", "BOUNCER")}
        env["issuer"]["MESHTRUST_ISSUER_FETCH_TIMEOUT"] = str(fetch)
    with tempfile.TemporaryDirectory(prefix="meshtrust-fleet-") as tmp:
        remotes = [f"f{i:04d}" for i in range(run.clusters)]
        fleet = HollowFleet(
            Path(tmp) / "fleet",
            remotes=remotes,
            hollow_processes=-(-run.clusters // CLUSTERS_PER_HOLLOW),
            kubeapi_processes=-(-run.clusters // CLUSTERS_PER_KUBEAPI),
            issuers=run.issuers,
            root_key=ROOT_KEY,
            issuer_profile=profile,
            env=env,
        )
        began = time.monotonic()
        try:
            fleet.up()
            run.up = time.monotonic() - began
            print(f"N={run.clusters} issuers={run.issuers}: up in {run.up:.1f} s", flush=True)
            asyncio.run(_measure(fleet, run, within=args.timeout))
        finally:
            fleet.down(purge=True)


async def _measure(fleet: HollowFleet, run: Run, *, within: float) -> None:
    remotes = fleet.remotes
    observer = Observer({c: fleet.kubeconfig(c) for c in remotes}, fleet.kubeconfig(MGMT))
    issuers = [fleet.process(name).pid for name in fleet.issuer_names()]
    async with KubeClient.from_kubeconfig(fleet.kubeconfig(MGMT)) as mgmt, observer.running():
        began = time.monotonic()
        await _each(remotes, lambda c: declare(mgmt, c))
        await _until(lambda: observer.finished(remotes, besides={}), within, "all FINISHED")
        run.declared = time.monotonic() - began
        print(f"  all {len(remotes)} FINISHED in {run.declared:.1f} s", flush=True)
        first = {c: observer.remote.serials(c) for c in remotes}
        await _until(
            lambda: all(first[c] <= observer.mirror.serials(c) for c in remotes),
            within,
            "mgmt to mirror every FINISHED",
        )
        lags = [
            observer.mirror.at[c][s] - observer.remote.at[c][s] for c in remotes for s in first[c]
        ]
        run.lag_median, run.lag_max = statistics.median(lags), max(lags)
        cpu = sum(cpu_seconds(pid) for pid in issuers)
        began = time.monotonic()
        await _each(remotes, lambda c: reissue(mgmt, c, ttl_days=364))
        await _until(lambda: observer.finished(remotes, besides=first), within, "all re-issued")
        run.reissued = time.monotonic() - began
        run.issuer_cpu = sum(cpu_seconds(pid) for pid in issuers) - cpu
    run.nats_rss = processes.rss_bytes(fleet.process("nats-server").pid) or 0
    run.issuer_rss = sum(processes.rss_bytes(pid) or 0 for pid in issuers)
    assert fleet.info is not None
    for process in fleet.info.processes:
        if process.name.startswith("hollow-"):
            run.hollow_rss += processes.rss_bytes(process.pid) or 0
        elif process.name.startswith("kubeapi-"):
            run.kubeapi_rss += processes.rss_bytes(process.pid) or 0


async def _each(clusters: list[str], action: object) -> None:
    assert callable(action)
    gate = asyncio.Semaphore(DECLARE_CONCURRENCY)

    async def one(cluster: str) -> None:
        async with gate:
            await action(cluster)

    await asyncio.gather(*(one(c) for c in clusters))


async def _until(check: object, within: float, what: str) -> None:
    assert callable(check)
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {within:.0f} s waiting for {what}")
        await asyncio.sleep(0.1)


def _ratio(run: Run, bare: float) -> float:
    return run.issuer_cpu / (run.clusters * bare)


def _print_run(run: Run, bare: float) -> None:
    print(
        f"N={run.clusters} issuers={run.issuers}: all FINISHED in {run.declared:.1f} s; "
        f"re-issue {run.reissued:.1f} s; issuer CPU {run.issuer_cpu / run.clusters * 1000:.1f} "
        f"ms/cert (ratio {_ratio(run, bare):.2f}); mirror lag median {run.lag_median:.2f} s, "
        f"max {run.lag_max:.2f} s; RSS nats {run.nats_rss / 2**20:.0f} MiB, issuer(s) "
        f"{run.issuer_rss / 2**20:.0f} MiB, hollow processes {run.hollow_rss / 2**20:.0f} MiB, "
        f"emulators {run.kubeapi_rss / 2**20:.0f} MiB",
        flush=True,
    )


def _print_profile(path: Path) -> None:
    # cProfile counts every resumption of a coroutine as a call: a coroutine's "ncalls" is about
    # one more per await that suspended it; count calls through plain functions (e.g. aiohttp's
    # ClientRequest.__init__ for requests made).
    print(f"issuer profile ({path}), top 25 by cumulative time:")
    pstats.Stats(str(path), stream=sys.stdout).sort_stats("cumulative").print_stats(25)
    print("top 25 by own time:")
    pstats.Stats(str(path), stream=sys.stdout).sort_stats("tottime").print_stats(25)


def _print_table(runs: list[Run], bare: float) -> None:
    columns = ["N", "issuers", "up (s)", "all FINISHED (s)", "re-issue (s)", "issuer ms/cert"]
    columns += ["R", "mirror lag median/max (s)", "NATS RSS (MiB)", "issuer RSS (MiB)"]
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for r in runs:
        print(
            f"| {r.clusters} | {r.issuers} | {r.up:.0f} | {r.declared:.1f} | {r.reissued:.1f} | "
            f"{r.issuer_cpu / r.clusters * 1000:.1f} | {_ratio(r, bare):.2f} | "
            f"{r.lag_median:.2f} / {r.lag_max:.2f} | {r.nats_rss / 2**20:.0f} | "
            f"{r.issuer_rss / 2**20:.0f} |"
        )
    single = {r.clusters: r for r in runs if r.issuers == 1}
    for r in runs:
        if r.issuers > 1:
            one = single[r.clusters]
            print(
                f"N={r.clusters}: {r.issuers} issuers vs 1: "
                f"all FINISHED x{one.declared / r.declared:.2f}, "
                f"re-issue x{one.reissued / r.reissued:.2f}"
            )


def _last_line(runs: list[Run], bare: float) -> str:
    single = {r.clusters: r for r in runs if r.issuers == 1}
    small, large = single[min(single)], single[max(single)]
    growth = large.declared / (large.clusters / small.clusters * small.declared)
    return (
        f"fleet N={large.clusters}: all FINISHED in {large.declared:.1f} s; "
        f"signing ratio {_ratio(large, bare):.2f}; growth {growth:.2f}"
    )


if __name__ == "__main__":
    sys.exit(main())
