"""Replicas benchmark: a storm of CSRs answered by one issuer process, then by two.

Run: ``.venv/bin/python bench/replicas.py [--rounds 3] [--csrs 300]`` (a minute or two).

One nats-server (file storage) and the Kubernetes API emulator as the management cluster in
this process, seeded as bench/flood.py seeds it (the clusters `east` and `west` declared, an
RSA-4096 root as the signing CA: each signature is an RSA-4096 one). The issuers are real
processes (`python -m services.issuer`, its settings from the environment), started for each
sample and stopped after it, so that two replicas can use two cores. Agents are played by
this script: `--csrs` real CSRs (P-256, proof of possession, one issuance each), half from each
cluster, published at once once every replica is ready.

A sample is the time from the first publish to the last answer. Rounds alternate one replica
and two. Printed per kind: p50 and the samples, the CSRs answered per second, and the
signatures (the ledger's entries for the sample's issuances: one each, whoever signed). The
last line is ``replicas speed-up (2 vs 1, p50 storm time): S``: on 2 cores shared with the
emulator and nats-server, S says how much of the CSR work a second replica takes over.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from flood import SYSTEM, Answers, progress, requests, seed

from devstack.kubeapi import KubeAPI
from devstack.natsserver import NatsServer
from services.issuer.settings import DEFAULT_EXCLUDED_NAMESPACES
from shared.bus import Bus, ConsumerSettings, NatsSettings
from shared.bus.ledger import Ledger
from shared.events import CertificateIssued
from shared.k8s import KubeClient
from shared.runtime import LoggingSettings, configure_logging

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    # A port picked by binding 0 races other processes: acceptable for a benchmark on its own.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@asynccontextmanager
async def issuers(count: int, *, nats_url: str, kubeconfig: Path) -> AsyncIterator[None]:
    """`count` issuer processes, ready (their /readyz 200), stopped (SIGTERM) at the end."""
    ports = [free_port() for _ in range(count)]
    children = []
    for index, port in enumerate(ports):
        env = {
            **os.environ,
            "MESHTRUST_NATS_URLS": nats_url,
            "MESHTRUST_KUBE_KUBECONFIG": str(kubeconfig),
            "MESHTRUST_HEALTH_HOST": "127.0.0.1",
            "MESHTRUST_HEALTH_PORT": str(port),
            "MESHTRUST_ISSUER_INSTANCE": f"bench-issuer-{index}",
            "MESHTRUST_ISSUER_EXCLUDED_NAMESPACES": ",".join(
                (*DEFAULT_EXCLUDED_NAMESPACES, SYSTEM)
            ),
            "MESHTRUST_ISSUER_SIGNING_NAMESPACES": SYSTEM,
            "MESHTRUST_ISSUER_ISSUANCE_BURST": "1000000",
            "MESHTRUST_LOG_LEVEL": "warning",
        }
        children.append(
            await asyncio.create_subprocess_exec(
                sys.executable, "-m", "services.issuer", cwd=REPO, env=env
            )
        )
    try:
        async with aiohttp.ClientSession() as http:
            for port in ports:
                await _ready(http, port)
        yield
    finally:
        for child in children:
            child.terminate()
        for child in children:
            await child.wait()


async def _ready(http: aiohttp.ClientSession, port: int, within: float = 60.0) -> None:
    deadline = time.monotonic() + within
    while True:
        try:
            async with http.get(f"http://127.0.0.1:{port}/readyz") as answer:
                if answer.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"the issuer on port {port} did not become ready")
        await asyncio.sleep(0.1)


@dataclass
class Results:
    seconds: dict[int, list[float]] = field(default_factory=lambda: {1: [], 2: []})
    storms: dict[int, list[list[str]]] = field(default_factory=lambda: {1: [], 2: []})
    """The issuances of each sample, by replica count."""


async def sample(
    bus: Bus, answers: Answers, decls: dict[str, dict[str, Any]], csrs: int
) -> tuple[float, list[str]]:
    storm = [*requests(decls["east"], csrs // 2), *requests(decls["west"], csrs - csrs // 2)]
    start = time.perf_counter()
    await asyncio.gather(*(bus.publish(r) for r in storm))
    await answers.wait(lambda: answers.count(storm) == len(storm), within=600)
    last = max(answers.arrived[r.issuance][0] for r in storm)
    if not all(isinstance(answers.arrived[r.issuance][1], CertificateIssued) for r in storm):
        raise RuntimeError("a CSR of the storm was not issued")
    return last - start, [r.issuance for r in storm]


async def run(rounds: int, csrs: int) -> tuple[Results, list[dict[str, Any]]]:
    results = Results()
    with tempfile.TemporaryDirectory() as tmp:
        server = NatsServer(store_dir=Path(tmp) / "js", log_file=Path(tmp) / "nats.log")
        server.start()
        try:
            nats = NatsSettings(urls=(server.url,), publish_deadline=30.0)
            async with KubeAPI(name="mgmt", tls=False, token=None) as api:
                kubeconfig = api.write_kubeconfig(Path(tmp) / "mgmt.kubeconfig")
                async with KubeClient.from_kubeconfig(kubeconfig) as kube, Bus.connect(nats) as bus:
                    await bus.provision()
                    decls = await seed(kube)
                    answers = Answers()
                    collector = bus.consumer(
                        ConsumerSettings(
                            durable="bench-answers",
                            filter_subjects=("meshtrust.v1.*.certificate.*",),
                            fetch_timeout=0.2,
                            record_completed=False,
                        ),
                        answers,
                    )
                    stop = asyncio.Event()
                    async with asyncio.TaskGroup() as group:
                        group.create_task(collector.run(stop))
                        for index in range(rounds):
                            for count in (1, 2):
                                progress(f"round {index + 1}/{rounds}: {count} replica(s)")
                                async with issuers(
                                    count, nats_url=server.url, kubeconfig=kubeconfig
                                ):
                                    seconds, issuances = await sample(bus, answers, decls, csrs)
                                results.seconds[count].append(seconds)
                                results.storms[count].append(issuances)
                        stop.set()
                    ledger = Ledger(
                        bus.connection, stream="MESHTRUST_LEDGER", subjects=("meshtrust.ledger.>",)
                    )
                    entries = [json.loads(e.data) async for e in ledger.read()]
        finally:
            server.stop()
    return results, entries


def report(results: Results, entries: list[dict[str, Any]], csrs: int) -> None:
    ledgered = Counter(e["issuance"] for e in entries)
    signer = {e["issuance"]: e["signed_by"] for e in entries}
    for count, samples in results.seconds.items():
        p50 = statistics.median(samples)
        shown = ", ".join(f"{s:.2f}" for s in samples)
        print(f"{count} replica(s): {csrs} CSRs in p50 {p50:.2f} s ({shown}); {csrs / p50:.0f}/s")
        splits = [sorted(Counter(signer[i] for i in s).values()) for s in results.storms[count]]
        print(f"  signatures by replica, per sample: {splits}")
    issuances = [i for storms in results.storms.values() for storm in storms for i in storm]
    once = all(ledgered[i] == 1 for i in issuances)
    print(
        f"signatures: {len(entries)} ledger entries for {len(issuances)} issuances, "
        f"one each: {once}"
    )
    speed_up = statistics.median(results.seconds[1]) / statistics.median(results.seconds[2])
    print(f"replicas speed-up (2 vs 1, p50 storm time): {speed_up:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--csrs", type=int, default=300)
    args = parser.parse_args()
    configure_logging(LoggingSettings(level="warning"))
    results, entries = asyncio.run(run(args.rounds, args.csrs))
    report(results, entries, args.csrs)


if __name__ == "__main__":
    main()
