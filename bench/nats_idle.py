"""nats-server alone with a fleet's idle consumers: is it the fetch rate or the consumer count?

One nats-server per fleet size N, configured as the stack does (`devstack.natsconfig`: an
account and nkeys user per identity, each cluster's durables exported to its accounts only),
provisioned as the provisioner does (`Bus.provision`, the hub's `FleetConsumers.ensure` for
every cluster: 4 N consumers). Then, from worker processes, an idle fleet: every cluster's agent
(its own identity and connection) pulls its `agent-` and `desired-` durables, its bouncer (its
own too) its `bouncer-` durable, each loop fetching one message with a wait of T seconds, again
and again (the services' idle turn, `shared.bus.consuming` and `shared.bus.kv`'s feed): 3 N / T
pull requests a second across the service imports, the loops' start spread over one wait.

Per cell, over a window once the loops run: nats-server's CPU (% of one core) and RSS; a probe
(one message a second published by the issuer to one cluster's agent subject, until that
cluster's agent loop, here on its own identity, receives it: p50/p99, lost if not in 5 s);
the issuer's `consumer_info` round trip; the "took too long" lines nats-server logged; the
fetches done a second; the clients' CPU. Cells: N in `--clusters` x T in `--waits`, and for
the largest N at the smallest T: every loop from the hub account (the issuer: no import), and
all 4 N consumers made but only the smallest N's clusters pulling (the count without the rate).
The floor, N=10 at the smallest T, runs first; the last line is
`nats idle: probe p99 at N=<largest>, T=<smallest> / floor: R`. Minutes; not in `make bench`:

    .venv/bin/python bench/nats_idle.py [--clusters 250 500 1000] [--waits 1 5 30]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import nats.errors
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from devstack.natsconfig import (
    ISSUER_USER,
    PROVISIONER_USER,
    inbox_prefix,
    nkeys_for,
    render,
    user_names,
)
from devstack.natsserver import NatsServer
from devstack.processes import cpu_seconds, rss_bytes
from shared.bus import Bus, NatsSettings
from shared.bus.connection import Connection, open_connection
from shared.bus.fleet import (
    DESIRED_STREAM,
    STREAM,
    FleetConsumers,
    agent_durable,
    bouncer_durable,
    desired_durable,
)
from shared.events import EventType, subject
from shared.runtime import LoggingSettings, configure_logging

FLOOR_CLUSTERS = 10
WORKERS = 4
CONNECTING = 32  # connections a worker opens at once
PROVISIONING = 16  # clusters whose consumers are made at once
GRACE = 5.0  # seconds after the window a probe may still arrive before it counts as lost
TOO_LONG = "took too long"


@dataclass
class Cell:
    clusters: int
    wait: float
    fetching: int
    hub: bool = False
    server_cpu: float = 0.0
    server_rss: int = 0
    client_cpu: float = 0.0
    fetch_rate: float = 0.0
    too_long: int = 0
    probes: list[float] = field(default_factory=list)
    lost: int = 0
    api: list[float] = field(default_factory=list)
    api_lost: int = 0
    errors: Counter[str] = field(default_factory=Counter)

    @property
    def label(self) -> str:
        who = "hub" if self.hub else "own"
        return f"N={self.clusters} pulling={self.fetching} {who} T={self.wait:g}"


def names(count: int) -> list[str]:
    return [f"f{i:04d}" for i in range(count)]


def nats_settings(url: str, credentials: Path, user: str, **overrides: object) -> NatsSettings:
    """How a service of identity `user` connects (its own seed and inbox prefix)."""
    settings = NatsSettings(
        urls=(url,),
        nkeys_seed_file=credentials / f"{user}.nk",
        inbox_prefix=inbox_prefix(user),
        name=user,
        provision=False,
    )
    return settings.model_copy(update=overrides)


def pulls(cluster: str) -> list[tuple[str, str, str]]:
    """(role, stream, durable) of a cluster's idle loops: its agent's two, its bouncer's one."""
    return [
        ("agent", STREAM, agent_durable(cluster)),
        ("agent", DESIRED_STREAM, desired_durable(cluster)),
        ("bouncer", STREAM, bouncer_durable(cluster)),
    ]


def user_of(role: str, cluster: str, *, hub: bool) -> str:
    """The identity a cluster's `role` connects as: its own, or the hub's issuer (no import)."""
    return ISSUER_USER if hub else f"{role}-{cluster}"


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


# --- the idle loops (in worker processes, and the probed one here) ---


async def idle_loop(
    sub: JetStreamContext.PullSubscription,
    wait: float,
    counts: Counter[str],
    *,
    received: Callable[[Msg], None] | None = None,
) -> None:
    """Fetch one message with a wait of `wait` seconds, forever (acknowledging what comes)."""
    await asyncio.sleep(random.uniform(0, wait))
    while True:
        try:
            msgs = await sub.fetch(1, timeout=wait)
        except TimeoutError:  # nats.errors.TimeoutError is one: nothing came within `wait`
            counts["fetches"] += 1
            continue
        except nats.errors.Error as exc:
            counts[type(exc).__name__] += 1
            await asyncio.sleep(1.0)  # the services pause after a failed fetch too
            continue
        counts["fetches"] += 1
        for msg in msgs:
            if received is not None:
                received(msg)
            await msg.ack()


async def connect_all(
    url: str, credentials: Path, keys: list[tuple[str, str]], *, hub: bool
) -> dict[tuple[str, str], Connection]:
    """One connection per (role, cluster), as its identity, `CONNECTING` at a time."""
    gate = asyncio.Semaphore(CONNECTING)

    async def one(role: str, cluster: str) -> Connection:
        async with gate:
            user = user_of(role, cluster, hub=hub)
            return await open_connection(nats_settings(url, credentials, user))

    opened = await asyncio.gather(*(one(role, cluster) for role, cluster in keys))
    return dict(zip(keys, opened, strict=True))


async def worker(spec: dict[str, str]) -> Counter[str]:
    """A share of the fleet's idle loops until stdin closes; prints "ready" once all pull."""
    url, credentials = spec["url"], Path(spec["credentials"])
    wait, hub, skip = float(spec["wait"]), spec["hub"] == "1", spec["skip"]
    wanted = [
        (role, cluster, stream, durable)
        for cluster in spec["clusters"].split(",")
        for role, stream, durable in pulls(cluster)
        if durable != skip  # the probed loop runs in the main process
    ]
    keys = sorted({(role, cluster) for role, cluster, *_ in wanted})
    connections = await connect_all(url, credentials, keys, hub=hub)
    subs = [
        await connections[(role, cluster)].js.pull_subscribe_bind(durable=durable, stream=stream)
        for role, cluster, stream, durable in wanted
    ]
    print("ready", flush=True)
    counts: Counter[str] = Counter()
    tasks = [asyncio.create_task(idle_loop(sub, wait, counts)) for sub in subs]
    loop = asyncio.get_running_loop()
    while await loop.run_in_executor(None, sys.stdin.readline):  # a mark: say how far
        print(json.dumps(counts), flush=True)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for conn in connections.values():
        await conn.nc.close()  # no drain: the loops are gone, nothing is in flight
    return counts


# --- the server, provisioned for N clusters ---


@contextlib.contextmanager
def fleet_server(root: Path, clusters: list[str]) -> Iterator[tuple[NatsServer, Path]]:
    """nats-server with the stack's accounts for `clusters` (nkeys), and the seeds' directory."""
    credentials = root / "credentials"
    public = nkeys_for(credentials, user_names(clusters))
    config = root / "nats.conf"
    config.write_text(render(clusters=clusters, nkeys=public, port=0))
    server = NatsServer(store_dir=root / "js", config_file=config, log_file=root / "nats.log")
    server.start(timeout=120)
    try:
        yield server, credentials
    finally:
        server.stop()


async def provision(url: str, credentials: Path, clusters: list[str]) -> None:
    """The streams and buckets, then every cluster's four durables, as the provisioner."""
    settings = nats_settings(url, credentials, PROVISIONER_USER, provision=True)
    async with Bus.connect(settings) as bus:
        await bus.provision()
        fleet = FleetConsumers(bus.connection)
        gate = asyncio.Semaphore(PROVISIONING)

        async def one(cluster: str) -> None:
            async with gate:
                await fleet.ensure(cluster)

        await asyncio.gather(*(one(cluster) for cluster in clusters))


# --- one cell ---


async def start_workers(
    url: str, credentials: Path, clusters: list[str], cell: Cell
) -> list[asyncio.subprocess.Process]:
    """`WORKERS` processes running the idle loops of `clusters` (but the probed one), ready."""
    share = -(-len(clusters) // WORKERS)
    procs = []
    for i in range(0, len(clusters), share):
        spec = {
            "url": url,
            "credentials": str(credentials),
            "wait": str(cell.wait),
            "hub": "1" if cell.hub else "0",
            "skip": agent_durable(clusters[0]),
            "clusters": ",".join(clusters[i : i + share]),
        }
        procs.append(
            await asyncio.create_subprocess_exec(
                sys.executable,
                __file__,
                "--worker",
                json.dumps(spec),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
            )
        )
    for proc in procs:
        assert proc.stdout is not None
        async with asyncio.timeout(300):
            line = await proc.stdout.readline()
        if line.strip() != b"ready":
            raise RuntimeError(f"a worker did not start (exit {await proc.wait()})")
    return procs


async def stop_workers(procs: list[asyncio.subprocess.Process]) -> Counter[str]:
    """Close their stdin; the counts each prints as it exits, summed."""
    counts: Counter[str] = Counter()
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.close()
    for proc in procs:
        assert proc.stdout is not None
        out = await proc.stdout.read()
        await proc.wait()
        counts.update(json.loads(out.decode().strip().splitlines()[-1]))
    return counts


class Probe:
    """One message a second to a cluster's agent subject, timed until its agent loop (here, on
    the cluster's own identity) receives it; and the issuer's `consumer_info` round trip."""

    def __init__(self, issuer: Connection, agent: Connection, cluster: str, cell: Cell) -> None:
        self._issuer, self._agent, self._cluster, self._cell = issuer, agent, cluster, cell
        self._sent: dict[bytes, float] = {}
        self._got: dict[bytes, float] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.counts: Counter[str] = Counter()
        self._sending_done = False
        self._all_in = asyncio.Event()

    def _received(self, msg: Msg) -> None:
        if msg.data in self._sent:  # not a lost probe of an earlier cell, redelivered
            self._got.setdefault(msg.data, time.monotonic())
        if self._sending_done and len(self._got) == len(self._sent):
            self._all_in.set()

    async def loop(self) -> None:
        sub = await self._agent.js.pull_subscribe_bind(
            durable=agent_durable(self._cluster), stream=STREAM
        )
        await idle_loop(sub, self._cell.wait, self.counts, received=self._received)

    async def _publish(self, data: bytes) -> None:
        self._sent[data] = time.monotonic()
        with contextlib.suppress(nats.errors.Error, TimeoutError):
            await self._issuer.js.publish(
                subject(self._cluster, EventType.CERTIFICATE_ISSUED), data, timeout=5
            )

    async def _api(self) -> None:
        start = time.monotonic()
        try:
            await self._issuer.js.consumer_info(STREAM, agent_durable(self._cluster), timeout=5)
        except (nats.errors.Error, TimeoutError):
            self._cell.api_lost += 1
        else:
            self._cell.api.append(time.monotonic() - start)

    def _spawn(self, action: Awaitable[None]) -> None:
        task = asyncio.ensure_future(action)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def sample(self, seconds: float) -> None:
        """Probe once a second for `seconds`, then wait `GRACE` for the stragglers."""
        started = time.monotonic()
        for i in range(int(seconds)):
            await asyncio.sleep(max(0.0, started + i - time.monotonic()))  # pacing, not sync
            self._spawn(self._publish(f"{self._cell.label} {i}".encode()))
            self._spawn(self._api())
        self._sending_done = True
        if len(self._got) == len(self._sent):
            self._all_in.set()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(GRACE):
                await self._all_in.wait()
        for task in list(self._tasks):
            task.cancel()
        self._cell.probes = [self._got[k] - t for k, t in self._sent.items() if k in self._got]
        self._cell.lost = len(self._sent) - len(self._cell.probes)


async def measure(server: NatsServer, credentials: Path, cell: Cell, *, window: float) -> None:
    """Run `cell`'s idle loops, let them settle (one wait), then measure over `window`."""
    assert server.pid is not None
    clusters = names(cell.fetching)
    procs = await start_workers(server.url, credentials, clusters, cell)
    issuer = await open_connection(nats_settings(server.url, credentials, ISSUER_USER))
    user = user_of("agent", clusters[0], hub=cell.hub)
    agent = await open_connection(nats_settings(server.url, credentials, user))
    probe = Probe(issuer, agent, clusters[0], cell)
    loop = asyncio.create_task(probe.loop())
    try:
        log_start = server.log_file.stat().st_size
        await asyncio.sleep(cell.wait + 2.0)  # every loop started (spread over one wait)
        before = await asyncio.to_thread(_cpu, server.pid, procs)
        fetches = await mark(procs) + probe.counts["fetches"]
        await probe.sample(window)
        after = await asyncio.to_thread(_cpu, server.pid, procs)
        fetches = await mark(procs) + probe.counts["fetches"] - fetches
        counts = await stop_workers(procs)
    finally:
        loop.cancel()
        await asyncio.gather(loop, return_exceptions=True)
        for conn in (issuer, agent):
            await conn.nc.close()  # no drain (it waits out the cancelled pull): nothing pends
    elapsed = after[2] - before[2]
    cell.server_cpu = 100 * (after[0] - before[0]) / elapsed
    cell.client_cpu = 100 * (after[1] - before[1]) / elapsed
    cell.server_rss = rss_bytes(server.pid) or 0
    cell.fetch_rate = fetches / elapsed
    cell.errors = Counter({k: v for k, v in (counts + probe.counts).items() if k != "fetches"})
    with server.log_file.open("rb") as log:
        log.seek(log_start)
        cell.too_long = log.read().decode(errors="replace").count(TOO_LONG)


async def mark(procs: list[asyncio.subprocess.Process]) -> int:
    """The fetches the workers have completed so far (each answers a line on stdin)."""
    total = 0
    for proc in procs:
        assert proc.stdin is not None
        assert proc.stdout is not None
        proc.stdin.write(b"mark\n")
        await proc.stdin.drain()
        total += json.loads(await proc.stdout.readline()).get("fetches", 0)
    return total


def _cpu(server: int, procs: list[asyncio.subprocess.Process]) -> tuple[float, float, float]:
    """(nats-server CPU s, client processes' CPU s: the workers and this one, monotonic time)."""
    clients = sum(cpu_seconds(p.pid) or 0.0 for p in procs) + time.process_time()
    return cpu_seconds(server) or 0.0, clients, time.monotonic()


# --- the run ---


def cells_for(clusters: int, waits: list[float], smallest: int, largest: int) -> list[Cell]:
    cells = [Cell(clusters=clusters, wait=wait, fetching=clusters) for wait in waits]
    if clusters == largest and largest > FLOOR_CLUSTERS:
        cells.append(Cell(clusters=clusters, wait=waits[0], fetching=clusters, hub=True))
        if smallest < largest:
            cells.append(Cell(clusters=clusters, wait=waits[0], fetching=smallest))
    return cells


async def run_fleet(root: Path, clusters: int, cells: list[Cell], *, window: float) -> None:
    """One server for `clusters`, provisioned, then each cell on it in turn."""
    fleet = names(clusters)
    with fleet_server(root, fleet) as (server, credentials):
        started = time.monotonic()
        await provision(server.url, credentials, fleet)
        print(f"N={clusters}: {4 * clusters} consumers made in {time.monotonic() - started:.1f} s")
        for cell in cells:
            await measure(server, credentials, cell, window=max(window, cell.wait))
            print_cell(cell, None)


HEADER = (
    "cell | pulls/s asked | done | nats CPU % | nats RSS MiB | probe p50 / p99 ms | lost | "
    "x floor p50 / p99 | api p50 / p99 ms | api lost | took too long | clients CPU % | errors"
)


def print_cell(cell: Cell, floor: Cell | None) -> None:
    p50, p99 = percentile(cell.probes, 0.5), percentile(cell.probes, 0.99)
    ratio = "-"
    if floor is not None and floor.probes:
        base50, base99 = percentile(floor.probes, 0.5), percentile(floor.probes, 0.99)
        ratio = f"{p50 / base50:.1f} / {p99 / base99:.1f}"
    api50, api99 = percentile(cell.api, 0.5), percentile(cell.api, 0.99)
    errors = ", ".join(f"{k} {v}" for k, v in cell.errors.most_common()) or "-"
    print(
        f"{cell.label} | {3 * cell.fetching / cell.wait:.0f} | {cell.fetch_rate:.0f} | "
        f"{cell.server_cpu:.0f} | {cell.server_rss / 2**20:.0f} | "
        f"{1e3 * p50:.1f} / {1e3 * p99:.1f} | "
        f"{cell.lost} | {ratio} | {1e3 * api50:.1f} / {1e3 * api99:.1f} | {cell.api_lost} | "
        f"{cell.too_long} | {cell.client_cpu:.0f} | {errors}",
        flush=True,
    )


async def run(clusters: list[int], waits: list[float], *, window: float) -> int:
    smallest, largest = min(clusters), max(clusters)
    with tempfile.TemporaryDirectory(prefix="nats-idle-") as tmp:
        floor = Cell(clusters=FLOOR_CLUSTERS, wait=waits[0], fetching=FLOOR_CLUSTERS)
        await run_fleet(Path(tmp) / "floor", FLOOR_CLUSTERS, [floor], window=window)
        done = [floor]
        for n in sorted(clusters):
            cells = cells_for(n, waits, smallest, largest)
            await run_fleet(Path(tmp) / f"n{n}", n, cells, window=window)
            done += cells
    print("\n" + HEADER)
    for cell in done:
        print_cell(cell, floor)
    top = next(c for c in done if c.clusters == largest and c.wait == waits[0] and not c.hub)
    if not floor.probes or not top.probes:
        print("nats idle: no probe arrived at the floor or the largest N: no ratio")
        return 1
    ratio = percentile(top.probes, 0.99) / percentile(floor.probes, 0.99)
    print(f"nats idle: probe p99 at N={largest}, T={waits[0]:g} / floor: {ratio:.1f}")
    return 0


def main() -> int:
    if len(sys.argv) == 3 and sys.argv[1] == "--worker":
        configure_logging(LoggingSettings(level="error"))
        counts = asyncio.run(worker(json.loads(sys.argv[2])))
        print(json.dumps(counts), flush=True)
        return 0
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--clusters", type=int, nargs="+", default=[250, 500, 1000])
    parser.add_argument("--waits", type=float, nargs="+", default=[1.0, 5.0, 30.0])
    parser.add_argument(
        "--window", type=float, default=20.0, help="seconds measured per cell (at least T)"
    )
    args = parser.parse_args()
    configure_logging(LoggingSettings(level="error"))
    return asyncio.run(run(args.clusters, sorted(args.waits), window=args.window))


if __name__ == "__main__":
    sys.exit(main())
