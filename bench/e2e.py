"""End-to-end benchmark: declaration in `mgmt` -> ISSUED in the remote cluster, on the local stack.

Run: ``.venv/bin/python bench/e2e.py [--p256 20] [--rsa4096 40] [--breakdown]`` (about 2 min).

One local stack (`devstack.stack.Stack`: nats-server, the emulated clusters `mgmt` and `east`,
the issuer, an agent and a bouncer as separate OS processes) in a temporary directory, for the
whole run. Each issuance is a fresh IssuedCertificate declared in `mgmt` (its own name and its own
issuedCertificateSecret, no podBounceDirective), created with `shared.k8s.KubeClient` (no kubectl
start-up in the clock); it is timed from just before the create request to the moment a watch on
the remote cluster's IssuedCertificates delivers it ISSUED (or FINISHED): event-driven, no
polling. One issuance is in flight at a time. Each one is then left to reach FINISHED, deleted,
and the next starts only once its remote copy is gone and the stack's processes are idle (CPU
read from /proc), so every issuance meets the same quiet stack: the agent keeps working for a
while after ISSUED (see docs/benchmarks.md), which would otherwise land in the next sample.

The floor is the same cryptography in this one process, no I/O: generate the key (same spec),
build the CSR, `check_csr`, `sign_intermediate` with the stack's own signing CA (read from its
Secret in `mgmt`), `make_bundle` + `check_bundle`. Floors and issuances alternate (floor, then
issuance, per sample; the algorithms alternate too), so machine noise hits both alike. Times are
wall-clock (`time.perf_counter`), since the end-to-end time is. RSA-4096 key generation alone
varies from 0.2 s to over 2 s, and the floor's draws are independent of the agent's, so RSA
gets 40 samples by default: with 10, the p50 ratio moved by +-0.3 between runs; with 20, a
bootstrap of measured key-generation times puts one run's ratio above 1.2 in ~17% of runs when
the true ratio is 1.04 (observed: 3 of 16 runs), with 40 in ~9% (docs/benchmarks.md, run 8).
With 20 P-256 samples, p99 is the slowest one.

Printed per algorithm: e2e p50/p99, floor p50/p99, ratio e2e p50 / floor p50, the CPU each stack
process used per issuance, and where the time went as seen from the watch (create -> remote
object seen -> REQUESTED -> ISSUED). With ``--breakdown``, the services' JSON logs (their
timestamps; the stack's logs/ directory) split each issuance at the log lines listed in
`LOG_MARKS`, medians printed (each line is written after the step it names). Progress goes to
stderr. The last line is ``e2e p50 to ISSUED: rsa4096 X ms (floor Y ms, ratio R), p256 Z ms``.

The issuance, the watch, the idle wait and the API probe are in `bench/e2e_stack.py`; this
script runs them against the floor, splits the time and prints.

Deliberately not measured: the pod bounce (no podBounceDirective), kubectl, start-up of the stack.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import itertools
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

# bench/'s own module: a script's directory comes first on sys.path (see pyproject's [tool.mypy]).
from e2e_stack import (
    ALGORITHMS,
    HOSTS,
    ORG,
    REMOTE,
    REMOTE_NAMESPACE,
    TTL,
    Remote,
    Sample,
    api_costs,
    grant_bench_secrets,
    issue,
    quiet,
    retire,
    signing_ca,
)

from devstack.stack import MGMT, Stack
from shared.k8s.client import KubeClient
from shared.k8s.errors import AlreadyExists
from shared.k8s.informer import Informer
from shared.k8s.resources import ISSUED_CERTIFICATES, NAMESPACES
from shared.pki import (
    KeyPolicy,
    KeySpec,
    SigningCA,
    build_csr,
    check_bundle,
    check_csr,
    generate_private_key,
    make_bundle,
    private_key_to_pem,
    sign_intermediate,
)
from shared.runtime import LoggingSettings, configure_logging


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}"


# --- the floor -------------------------------------------------------------------------------


FLOOR_PARTS = ("generate key", "build CSR", "check_csr", "sign_intermediate", "bundle + check")


def floor_once(spec: KeySpec, ca: SigningCA, *, name: str) -> list[float]:
    """Seconds of each part of the flow's cryptography (`FLOOR_PARTS`), once, in this process."""
    now = dt.datetime.now(dt.UTC)
    marks = [time.perf_counter()]
    key = generate_private_key(spec)
    marks.append(time.perf_counter())
    csr_pem = build_csr(key, org=ORG, name=name, hosts=HOSTS)
    marks.append(time.perf_counter())
    csr = check_csr(csr_pem, hosts=HOSTS, org=ORG, policy=KeyPolicy())
    marks.append(time.perf_counter())
    issued = sign_intermediate(csr, ca, hosts=HOSTS, org=ORG, name=name, ttl=TTL, now=now)
    marks.append(time.perf_counter())
    bundle = make_bundle(issued, private_key_to_pem(key))
    check_bundle(bundle, hosts=HOSTS, org=ORG, now=now)
    marks.append(time.perf_counter())
    return [later - earlier for earlier, later in itertools.pairwise(marks)]


# --- the run: floors and issuances alternating -----------------------------------------------


def schedule(counts: dict[str, int]) -> Iterator[tuple[str, int]]:
    """(algorithm, index) alternating between algorithms while both have samples left."""
    for i in range(max(counts.values())):
        for algorithm, count in counts.items():
            if i < count:
                yield algorithm, i


@dataclass
class Results:
    samples: dict[str, list[Sample]]
    floors: dict[str, list[list[float]]]
    """Per sample, the seconds of each of `FLOOR_PARTS`."""
    api: dict[str, list[float]] = field(default_factory=dict)
    """Single-request round trips to the remote cluster, before and after the issuances."""


async def run(stack: Stack, *, counts: dict[str, int], warmup: int, within: float) -> Results:
    results = Results(samples={a: [] for a in counts}, floors={a: [] for a in counts})
    remote = Remote()
    assert stack.info is not None
    info = stack.info
    async with (
        KubeClient.from_kubeconfig(stack.kubeconfig(MGMT)) as mgmt,
        KubeClient.from_kubeconfig(stack.kubeconfig(REMOTE)) as east,
        asyncio.TaskGroup() as group,
    ):
        informer = Informer(east, ISSUED_CERTIFICATES, namespace=REMOTE_NAMESPACE)
        informer.add_handler(remote.handle)
        watching = group.create_task(informer.run(), name="bench:remote-watch")
        try:
            await informer.wait_synced()
            await grant_bench_secrets(east)
            namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": REMOTE}}
            with contextlib.suppress(AlreadyExists):
                await mgmt.create(NAMESPACES, namespace)
            ca = await signing_ca(mgmt)
            for verb, times in (await api_costs(east)).items():
                results.api.setdefault(verb, []).extend(times)
            plan = [(a, -1 - i) for i in range(warmup) for a in counts]
            plan += list(schedule(counts))
            for algorithm, index in plan:
                label = f"warm{-index}" if index < 0 else f"{index:03d}"
                name = f"bench-{algorithm}-{label}"
                floor = await asyncio.to_thread(floor_once, ALGORITHMS[algorithm], ca, name=name)
                sample = await issue(
                    mgmt, remote, info, algorithm=algorithm, name=name, within=within
                )
                await retire(mgmt, remote, name)
                await quiet(info)
                if index >= 0:
                    results.floors[algorithm].append(floor)
                    results.samples[algorithm].append(sample)
                print(
                    f"  {name}: e2e {ms(sample.to_issued)} ms, floor {ms(sum(floor))} ms, CPU "
                    + ", ".join(f"{p} {ms(v)}" for p, v in sample.cpu.items() if v),
                    file=sys.stderr,
                    flush=True,
                )
            for verb, times in (await api_costs(east)).items():
                results.api[verb].extend(times)
        finally:
            watching.cancel()
    return results


# --- where the time goes: the watch, and the services' logs ----------------------------------


def watch_steps(sample: Sample) -> dict[str, float]:
    """Seconds between the steps the benchmark itself sees."""
    steps: dict[str, float] = {}
    assert sample.created is not None
    steps["create request"] = sample.created - sample.started
    pending = sample.seen.get("PENDING")
    requested = sample.seen.get("REQUESTED")
    issued = sample.started + sample.to_issued
    if pending is not None:
        steps["created -> remote object seen"] = pending - sample.created
        if requested is not None:
            steps["remote seen -> REQUESTED"] = requested - pending
    if requested is not None:
        steps["REQUESTED -> ISSUED"] = issued - requested
    return steps


# (service log, event, field naming the object, and how the field names it)
LOG_MARKS = [
    ("issuer", "desired state published", "key", "east.issuedcertificates.{}"),
    ("agent-east", "desired object created", "kv_key", "east.issuedcertificates.{}"),
    ("agent-east", "issuance.starting", "key", "istio-system/{}"),
    ("agent-east", "state.changed:REQUESTED", "key", "istio-system/{}"),
    ("agent-east", "csr.sent", "key", "istio-system/{}"),
    ("issuer", "certificate signed", "name", "{}"),
    ("agent-east", "issued Secret written", "key", "istio-system/{}"),
    ("agent-east", "state.changed:ISSUED", "key", "istio-system/{}"),
]


def read_marks(logs: Path) -> dict[tuple[str, str], float]:
    """(event, object) -> first timestamp (epoch seconds) of that event in the services' logs."""
    marks: dict[tuple[str, str], float] = {}
    fields = {(service, event): key for service, event, key, _ in LOG_MARKS}
    for service in sorted({service for service, _ in fields}):
        path = logs / f"{service}.log"
        if not path.exists():
            continue
        for line in path.read_text().splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue  # not one of structlog's lines (a traceback, say)
            event = str(record.get("event"))
            if event == "state.changed":
                event = f"state.changed:{record.get('new')}"
            key = fields.get((service, event))
            if key is None or key not in record or "timestamp" not in record:
                continue
            when = dt.datetime.fromisoformat(record["timestamp"]).timestamp()
            marks.setdefault((event, str(record[key])), when)
    return marks


def log_steps(sample: Sample, marks: dict[tuple[str, str], float]) -> dict[str, float] | None:
    """Seconds between consecutive log marks of one issuance (None if a mark is missing)."""
    times = [sample.started_wall]
    for _, event, _, form in LOG_MARKS:
        when = marks.get((event, form.format(sample.name)))
        if when is None:
            return None
        times.append(when)
    times.append(sample.started_wall + sample.to_issued)
    names = ["declared (create sent)", *(event for _, event, _, _ in LOG_MARKS), "bench saw ISSUED"]
    return {f"{names[i]} -> {names[i + 1]}": times[i + 1] - times[i] for i in range(len(times) - 1)}


def print_steps(title: str, per_sample: list[dict[str, float]]) -> None:
    if not per_sample:
        print(f"  {title}: no complete samples")
        return
    print(f"  {title} (median over {len(per_sample)}):")
    for step in per_sample[0]:
        values = [steps[step] for steps in per_sample if step in steps]
        print(f"    {step:<58} {ms(statistics.median(values)):>8} ms")


# --- main ------------------------------------------------------------------------------------


def report(results: Results, *, logs: Path | None) -> None:
    marks = read_marks(logs) if logs is not None else {}
    print("resolution: a watch on the remote IssuedCertificates (no polling), time.perf_counter")
    print(
        "API round trip from this process to the emulated remote cluster: "
        + ", ".join(
            f"{verb} p50 {ms(statistics.median(times))} ms" for verb, times in results.api.items()
        )
    )
    summary: dict[str, tuple[float, float]] = {}
    for algorithm, taken in results.samples.items():
        e2e = [s.to_issued for s in taken]
        floor = [sum(parts) for parts in results.floors[algorithm]]
        p50, floor_p50 = statistics.median(e2e), statistics.median(floor)
        summary[algorithm] = (p50, floor_p50)
        print(
            f"{algorithm}: n={len(e2e)}  e2e p50 {ms(p50)} ms, p99 {ms(percentile(e2e, 0.99))} ms;"
            f" floor p50 {ms(floor_p50)} ms, p99 {ms(percentile(floor, 0.99))} ms;"
            f" ratio {p50 / floor_p50:.2f}; e2e - floor (p50) {ms(p50 - floor_p50)} ms"
        )
        parts = zip(*results.floors[algorithm], strict=True)
        print(
            "  floor parts (p50): "
            + ", ".join(
                f"{part} {ms(statistics.median(times))} ms"
                for part, times in zip(FLOOR_PARTS, parts, strict=True)
            )
        )
        cpu = {p: statistics.mean(s.cpu.get(p, 0.0) for s in taken) for p in taken[0].cpu}
        print(
            "  CPU per issuance (mean, create -> ISSUED seen): "
            + ", ".join(f"{p} {ms(v)} ms" for p, v in cpu.items())
        )
        print_steps("seen from the watch", [watch_steps(s) for s in taken])
        if logs is not None:
            complete = [steps for s in taken if (steps := log_steps(s, marks)) is not None]
            print_steps("from the services' logs", complete)
    line = []
    if "rsa4096" in summary:
        p50, floor_p50 = summary["rsa4096"]
        line.append(f"rsa4096 {ms(p50)} ms (floor {ms(floor_p50)} ms, ratio {p50 / floor_p50:.2f})")
    if "p256" in summary:
        line.append(f"p256 {ms(summary['p256'][0])} ms")
    print("e2e p50 to ISSUED: " + ", ".join(line))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--p256", type=int, default=20, help="P-256 issuances")
    parser.add_argument("--rsa4096", type=int, default=40, help="RSA-4096 issuances")
    parser.add_argument("--warmup", type=int, default=1, help="uncounted issuances per algorithm")
    parser.add_argument("--within", type=float, default=60.0, help="seconds allowed per issuance")
    parser.add_argument(
        "--breakdown", action="store_true", help="split each issuance by the services' logs"
    )
    args = parser.parse_args()
    configure_logging(LoggingSettings(level="warning"))
    counts = {a: n for a, n in (("p256", args.p256), ("rsa4096", args.rsa4096)) if n > 0}
    with tempfile.TemporaryDirectory(prefix="meshtrust-e2e-") as tmp:
        # Every issuance here is one cluster's: far above the default issuance rate limit
        # (5 at once, then 10 an hour), which would measure the limit, not the issuance.
        stack = Stack(
            Path(tmp),
            remotes=[REMOTE],
            env={"issuer": {"MESHTRUST_ISSUER_ISSUANCE_BURST": "100000"}},
        )
        try:
            started = time.monotonic()
            stack.up()
            print(f"stack up in {time.monotonic() - started:.1f} s", file=sys.stderr, flush=True)
            results = asyncio.run(run(stack, counts=counts, warmup=args.warmup, within=args.within))
        finally:
            stack.down()
        report(results, logs=stack.logs if args.breakdown else None)


if __name__ == "__main__":
    main()
