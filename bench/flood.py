"""Flood benchmark: another cluster's issuance while one cluster floods the issuer with CSRs.

Run: ``.venv/bin/python bench/flood.py [--rounds 5] [--flood 2000]`` (under a minute).

One nats-server (file storage), the Kubernetes API emulator as the management cluster, and one
issuer replica in this process (`services.issuer.app.serve`, as the issuer tests run it), with
the clusters `east` and `west` declared. Agents are played by this script: each CSR is a real
one (P-256, proof of possession), published as the agent publishes it.

A sample is one CSR of west, timed from just before its publish to its `certificate.issued`
arriving on the bus. Rounds alternate two samples:

- the floor: west's CSR on a quiet issuer (no flood in the stream);
- under flood: east publishes `--flood` valid CSRs as fast as it can; once a quarter of them
  are stored, west sends its CSR, behind them in the stream. The round ends once every CSR of
  east is answered (signed within its quota, else denied RateLimited).

East's quota is the default burst's size less than what west needs (the issuance burst is one
setting for every cluster): a few of east's CSRs are signed, the rest denied. Printed per kind:
p50 and max of west's latency, then the flood's own figures (east's CSRs answered when west's
certificate arrived, and east's CSRs answered per second). The last line is
``flood/floor p50 latency ratio: R``.

Before the per-cluster durables (docs/issuer.md, "Fairness") the issue measured 11.2 s
against 1.7 s for a re-issue under a flood of 2,000: west waited for the whole flood.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import datetime as dt
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from cryptography.hazmat.primitives.asymmetric import ec

from devstack.kubeapi import KubeAPI
from devstack.natsserver import NatsServer
from services.issuer.app import serve
from services.issuer.settings import DEFAULT_EXCLUDED_NAMESPACES, IssuerSettings
from shared.bus import Bus, ConsumerSettings, Delivery, NatsSettings
from shared.events import (
    CertificateDenied,
    CertificateIssued,
    CsrRequested,
    CsrRequestedData,
    Event,
    new_issuance_id,
)
from shared.k8s import KubeClient, KubeError
from shared.k8s.config import KubeSettings
from shared.k8s.resources import (
    CUSTOM_RESOURCE_DEFINITIONS,
    ISSUED_CERTIFICATES,
    NAMESPACES,
    SECRETS,
)
from shared.pki import build_csr, create_root_ca
from shared.runtime import LoggingSettings, configure_logging
from shared.runtime.health import HealthSettings

CRDS = Path(__file__).resolve().parent.parent / "deploy" / "crds"
SYSTEM = "meshtrust-system"
ORG = "meshtrust bench"


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@dataclass
class Answers:
    """When each issuance's first answer arrived (perf_counter), and the answer."""

    arrived: dict[str, tuple[float, Event]] = field(default_factory=dict)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def __call__(self, event: Event, delivery: Delivery) -> None:
        self.arrived.setdefault(event.issuance, (time.perf_counter(), event))
        self.changed.set()

    async def wait(self, check: Callable[[], bool], within: float = 120.0) -> None:
        deadline = time.monotonic() + within
        while not check():
            self.changed.clear()
            if time.monotonic() > deadline:
                raise TimeoutError("answers did not come in time")
            try:
                async with asyncio.timeout(1.0):
                    await self.changed.wait()
            except TimeoutError:
                pass

    def count(self, requests: list[CsrRequested]) -> int:
        return sum(1 for r in requests if r.issuance in self.arrived)


# --- the management cluster -------------------------------------------------------------------


def hosts(cluster: str) -> list[str]:
    return [f"spiffe://{cluster}.local/ns/istio-system/sa/istiod"]


def declaration(cluster: str) -> dict[str, Any]:
    return {
        "apiVersion": "certificates.smh.solo.io/v1alpha2",
        "kind": "IssuedCertificate",
        "metadata": {"name": "istio-ca", "namespace": cluster},
        "spec": {
            "hosts": hosts(cluster),
            "org": ORG,
            "signingCertificateSecret": {"name": "root-ca", "namespace": SYSTEM},
            "issuedCertificateSecret": {"name": "cacerts", "namespace": "istio-system"},
            "certOptions": {"keyAlgorithm": "ECDSA", "keySize": 256, "ttlDays": 30},
        },
    }


async def seed(kube: KubeClient) -> dict[str, dict[str, Any]]:
    """CRDs, namespaces, the signing CA and a declaration per cluster (returned by cluster)."""
    for path in sorted(CRDS.glob("*.yaml")):
        await kube.create(CUSTOM_RESOURCE_DEFINITIONS, yaml.safe_load(path.read_text()))
    while True:
        try:
            await kube.list(ISSUED_CERTIFICATES, namespace="default", limit=1)
            break
        except KubeError:
            await asyncio.sleep(0.05)
    for name in ("east", "west", SYSTEM):
        body = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
        await kube.create(NAMESPACES, body)
    now = dt.datetime.now(dt.UTC)
    data = create_root_ca(org=ORG, common_name="bench root", ttl=dt.timedelta(days=30), now=now)
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "root-ca", "namespace": SYSTEM},
        "type": "Opaque",
        "data": {k: base64.b64encode(v).decode() for k, v in data.items()},
    }
    await kube.create(SECRETS, secret)
    return {c: await kube.create(ISSUED_CERTIFICATES, declaration(c)) for c in ("east", "west")}


def requests(decl: dict[str, Any], count: int) -> Iterator[CsrRequested]:
    """`count` valid CSRs of the declaration's cluster, each its own issuance (one key)."""
    meta = decl["metadata"]
    key = ec.generate_private_key(ec.SECP256R1())
    csr = build_csr(key, org=ORG, name=meta["name"], hosts=hosts(meta["namespace"])).decode()
    for _ in range(count):
        yield CsrRequested(
            source=f"agent/{meta['namespace']}",
            cluster=meta["namespace"],
            issuance=new_issuance_id(),
            data=CsrRequestedData(
                name=meta["name"],
                declaration_uid=meta["uid"],
                declaration_generation=meta.get("generation") or 1,
                csr_pem=csr,
            ),
        )


# --- the run ----------------------------------------------------------------------------------


@dataclass
class Results:
    floor: list[float] = field(default_factory=list)
    flooded: list[float] = field(default_factory=list)
    east_answered_then: list[int] = field(default_factory=list)
    flood_rates: list[float] = field(default_factory=list)


async def west_sample(bus: Bus, answers: Answers, decl: dict[str, Any]) -> float:
    (request,) = requests(decl, 1)
    start = time.perf_counter()
    await bus.publish(request)
    await answers.wait(lambda: request.issuance in answers.arrived)
    arrived, answer = answers.arrived[request.issuance]
    if not isinstance(answer, CertificateIssued):
        raise RuntimeError(f"west was not issued: {answer}")
    return arrived - start


async def flood_round(
    bus: Bus, answers: Answers, decls: dict[str, dict[str, Any]], size: int, results: Results
) -> None:
    """East's flood from a process of its own (an agent is one), west's sample meanwhile."""
    meta = decls["east"]["metadata"]
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        __file__,
        "--publish-flood",
        bus.settings.urls[0],
        meta["uid"],
        str(size),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert child.stdin is not None
    assert child.stdout is not None
    flood = [CsrRequested.model_validate_json(await child.stdout.readline()) for _ in range(size)]
    started = time.perf_counter()
    child.stdin.write(b"go\n")
    await child.stdin.drain()
    if await child.stdout.readline() != b"quarter\n":
        raise RuntimeError("the flood's publisher failed")
    results.flooded.append(await west_sample(bus, answers, decls["west"]))
    results.east_answered_then.append(answers.count(flood))
    await child.wait()
    await answers.wait(lambda: answers.count(flood) == size)
    last = max(answers.arrived[r.issuance][0] for r in flood)
    results.flood_rates.append(size / (last - started))
    denied = [r for r in flood if isinstance(answers.arrived[r.issuance][1], CertificateDenied)]
    progress(f"  flood answered: {size - len(denied)} signed, {len(denied)} denied")


async def publish_flood(url: str, uid: str, size: int) -> None:
    """The flood's publisher (`--publish-flood`): print every request, wait for `go` on
    stdin, publish them all a hundred at a time, print `quarter` once a quarter is stored."""
    decl = declaration("east")
    decl["metadata"]["uid"] = uid
    flood = list(requests(decl, size))
    for request in flood:
        sys.stdout.write(request.model_dump_json() + "\n")
    sys.stdout.flush()
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    async with Bus.connect(NatsSettings(urls=(url,), publish_deadline=30.0)) as bus:
        for start in range(0, size, 100):
            await asyncio.gather(*(bus.publish(r) for r in flood[start : start + 100]))
            if start < size // 4 <= start + 100:
                print("quarter", flush=True)


@asynccontextmanager
async def issuer(settings: IssuerSettings) -> AsyncIterator[None]:
    stop = asyncio.Event()
    async with asyncio.TaskGroup() as group:
        group.create_task(serve(settings, stop=stop, handle_signals=False))
        try:
            yield
        finally:
            stop.set()


async def run(rounds: int, size: int) -> Results:
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
                    settings = IssuerSettings(
                        instance="bench-issuer",
                        nats=nats,
                        kube=KubeSettings(kubeconfig=kubeconfig),
                        health=HealthSettings(host="127.0.0.1", port=0),
                        excluded_namespaces=(*DEFAULT_EXCLUDED_NAMESPACES, SYSTEM),
                        signing_namespaces=(SYSTEM,),
                        issuance_burst=2 * rounds + 2,  # west's samples; east's quota
                        issuance_per_hour=1,
                    )
                    await rounds_against(bus, settings, decls, rounds, size, results)
        finally:
            server.stop()
    return results


async def rounds_against(
    bus: Bus,
    settings: IssuerSettings,
    decls: dict[str, dict[str, Any]],
    rounds: int,
    size: int,
    results: Results,
) -> None:
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
    async with asyncio.TaskGroup() as group, issuer(settings):
        group.create_task(collector.run(stop))
        await west_sample(bus, answers, decls["west"])  # warm-up: consumers, caches
        for index in range(rounds):
            progress(f"round {index + 1}/{rounds}")
            results.floor.append(await west_sample(bus, answers, decls["west"]))
            await flood_round(bus, answers, decls, size, results)
        stop.set()


def report(results: Results, size: int) -> None:
    def line(name: str, values: list[float]) -> str:
        p50 = statistics.median(values) * 1000
        return f"{name}: west's issuance p50 {p50:.0f} ms, max {max(values) * 1000:.0f} ms"

    print(line("floor (no flood)", results.floor))
    print(line(f"under a flood of {size} CSRs from east", results.flooded))
    print(
        f"east's CSRs answered when west's certificate arrived: "
        f"{', '.join(str(n) for n in results.east_answered_then)} (of {size})"
    )
    print(f"east's flood answered at {statistics.median(results.flood_rates):.0f} CSRs/s (p50)")
    ratio = statistics.median(results.flooded) / statistics.median(results.floor)
    print(f"flood/floor p50 latency ratio: {ratio:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--flood", type=int, default=2000)
    parser.add_argument("--publish-flood", nargs=3, metavar=("URL", "UID", "COUNT"))
    args = parser.parse_args()
    configure_logging(LoggingSettings(level="warning"))
    if args.publish_flood:
        url, uid, count = args.publish_flood
        asyncio.run(publish_flood(url, uid, int(count)))
        return
    results = asyncio.run(run(args.rounds, args.flood))
    report(results, args.flood)


if __name__ == "__main__":
    main()
