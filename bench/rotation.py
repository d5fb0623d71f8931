"""Rotation benchmark: the time to rotate N clusters' root (ECDSA), by N and by wave size.

Run: ``.venv/bin/python bench/rotation.py [--clusters 3,20] [--waves 1,5] [--floor 3]``
(about 10 min with the defaults on 2 cores; not part of `make bench`).

For each N: one local stack (`devstack.stack.Stack`) of N remote clusters in a temporary
directory, every cluster declared as the demo declares it (P-256, the podBounceDirective of
deploy/examples: two selectors, the stack's default pod ready delay) and FINISHED. Then, on that
stack:

- the **floor**, one cluster's single re-issue: its declaration's `ttlDays` changed, timed from
  the patch to FINISHED of the new issuance in the remote cluster (key, CSR, signature, bounce,
  FINISHED: what each step of a rotation costs one cluster), the median of `--floor` samples;
- per wave size W: a new root CA Secret in mgmt and a CertificateRotation from the Secret the
  declarations name to it (`waveSize` W, `gracePeriod` 0s: the grace is a wait the operator
  chooses, not work), created with `shared.k8s` (no CLI start-up in the clock), timed from the
  create to `status.phase` Succeeded (polled every 50 ms). Every cluster goes through three
  steps (add, move, drop), so a rotation is at least 3 x ceil(N / W) waves of re-issues one
  after the other. Between two rotations, outside the clock, the fleet adopts the new root as
  docs/rotation.md says (agents re-pinned, declarations pointed at the new Secret, FINISHED,
  the rotation deleted).

Printed per (N, W): the rotation time, its ratio to the floor, the number of waves and the time
per wave (ratio to the floor); then how the time grows with N (largest N over smallest, per W) and
with the wave size (largest W over smallest, per N), each next to what pure wave counting
predicts. Progress goes to stderr. The last line sums it up.

Deliberately not measured: the stack's start-up, kubectl, the grace period.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import datetime as dt
import itertools
import math
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devstack.seeding import TRUST_BUNDLE
from devstack.stack import MGMT, REPO, ROOT_CA_SECRET, Stack
from shared.k8s.client import KubeClient
from shared.k8s.resources import CONFIG_MAPS, ISSUED_CERTIFICATES, SECRETS, Resource
from shared.pki import create_root_ca

ROTATIONS = Resource(
    "certificates.smh.solo.io", "v1alpha2", "certificaterotations", "CertificateRotation"
)
NAMESPACE = ROOT_CA_SECRET[0]
IC_NAME = "istio-cacerts"
IC_NAMESPACE = "istio-system"
STEPS = 3
"""add, move, drop: every cluster re-issues three times in a root rotation."""
POLL = 0.05
ENV = {"issuer": {"MESHTRUST_ISSUER_ISSUANCE_BURST": "100000"}}
"""A rotation re-issues every cluster three times, and the floor some more: above the issuer's
default burst of new signatures per cluster and hour (tests/issuer/test_issuer_quota.py)."""
NAMES = itertools.count(1)


@dataclass(frozen=True)
class Result:
    clusters: int
    wave: int
    seconds: float
    floor: float

    @property
    def waves(self) -> int:
        return STEPS * math.ceil(self.clusters / self.wave)


def note(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


@contextmanager
def stack_of(clusters: int) -> Iterator[Stack]:
    with tempfile.TemporaryDirectory(prefix="meshtrust-rotation-") as tmp:
        remotes = [f"c{i:02d}" for i in range(1, clusters + 1)]
        stack = Stack(Path(tmp) / "devstack", remotes=remotes, env=ENV)
        try:
            began = time.monotonic()
            stack.up()
            note(f"  stack of {clusters} clusters up in {time.monotonic() - began:.0f}s")
            text = (REPO / "deploy" / "examples" / "declarations.yaml").read_text()
            for cluster in remotes:
                stack.kubectl(MGMT, "apply", "-f", "-", stdin=text.replace("CLUSTER", cluster))
            yield stack
        finally:
            stack.down(purge=True)


class Fleet:
    """Clients for mgmt and every remote cluster of one stack (an async context manager)."""

    def __init__(self, stack: Stack) -> None:
        self.remotes = list(stack.remotes)
        self.kube = {
            c: KubeClient.from_kubeconfig(stack.kubeconfig(c)) for c in [MGMT, *stack.remotes]
        }

    async def __aenter__(self) -> Fleet:
        for client in self.kube.values():
            await client.__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> None:
        for client in self.kube.values():
            await client.__aexit__(None, None, None)

    async def status(self, cluster: str) -> dict[str, Any]:
        obj = await self.kube[cluster].get(ISSUED_CERTIFICATES, IC_NAME, namespace=IC_NAMESPACE)
        return dict(obj.get("status") or {})

    async def finished(
        self, previous: Mapping[str, str | None], *, within: float
    ) -> dict[str, str]:
        """Poll until every cluster of `previous` is FINISHED for an issuance other than the
        one given; their issuances."""
        deadline = time.monotonic() + within
        done: dict[str, str] = {}
        while len(done) < len(previous):
            for cluster, before in previous.items():
                if cluster in done:
                    continue
                status = await self.status(cluster)
                issuance = status.get("issuanceId")
                if status.get("state") == "FINISHED" and issuance not in (None, before):
                    done[cluster] = issuance
            if time.monotonic() > deadline:
                missing = sorted(set(previous) - set(done))
                raise TimeoutError(f"not FINISHED within {within:.0f}s: {missing}")
            await asyncio.sleep(POLL)
        return done

    async def issuances(self) -> dict[str, str | None]:
        return {c: (await self.status(c)).get("issuanceId") for c in self.remotes}

    async def declared_secret(self) -> str:
        obj = await self.kube[MGMT].get(ISSUED_CERTIFICATES, IC_NAME, namespace=self.remotes[0])
        return str(obj["spec"]["signingCertificateSecret"]["name"])


async def floor_once(fleet: Fleet, ttl_days: int) -> float:
    """One cluster's re-issue: a new `ttlDays`, timed to FINISHED of the new issuance."""
    cluster = fleet.remotes[0]
    before = {cluster: (await fleet.status(cluster)).get("issuanceId")}
    started = time.perf_counter()
    await fleet.kube[MGMT].patch_merge(
        ISSUED_CERTIFICATES, IC_NAME, {"spec": {"certOptions": {"ttlDays": ttl_days}}},
        namespace=cluster,
    )  # fmt: skip
    await fleet.finished(before, within=120)
    return time.perf_counter() - started


async def new_root(fleet: Fleet, name: str) -> bytes:
    data = create_root_ca(
        org="meshtrust bench",
        common_name=f"meshtrust bench root {name}",
        ttl=dt.timedelta(days=30),
        now=dt.datetime.now(dt.UTC),
    )
    body = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "type": "Opaque",
        "data": {k: base64.b64encode(v).decode() for k, v in data.items()},
    }
    await fleet.kube[MGMT].create(SECRETS, body, namespace=NAMESPACE)
    return data["root-cert.pem"]


async def rotate(fleet: Fleet, *, wave: int, within: float) -> tuple[float, str, bytes]:
    """A root rotation of the whole fleet with `waveSize` `wave`: seconds from the create to
    Succeeded, the rotation's name and the new root."""
    number = next(NAMES)
    secret, name = f"bench-root-{number}", f"bench-rotation-{number}"
    root = await new_root(fleet, secret)
    body = {
        "apiVersion": ROTATIONS.api_version,
        "kind": ROTATIONS.kind,
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "signingCertificateSecret": {
                "namespace": NAMESPACE,
                "name": await fleet.declared_secret(),
            },
            "newSigningCertificateSecret": {"namespace": NAMESPACE, "name": secret},
            "waveSize": wave,
            "gracePeriod": "0s",
        },
    }
    started = time.perf_counter()
    await fleet.kube[MGMT].create(ROTATIONS, body, namespace=NAMESPACE)
    deadline = time.monotonic() + within
    while True:
        obj = await fleet.kube[MGMT].get(ROTATIONS, name, namespace=NAMESPACE)
        status = obj.get("status") or {}
        if status.get("phase") == "Succeeded":
            return time.perf_counter() - started, name, root
        if status.get("phase") in ("Failed", "RolledBack") or time.monotonic() > deadline:
            raise RuntimeError(f"rotation {name} did not succeed: {status}")
        await asyncio.sleep(POLL)


async def adopt(fleet: Fleet, name: str, root: bytes) -> None:
    """Outside the clock: re-pin every agent on the new root, point every declaration at the
    new Secret, wait for FINISHED, delete the rotation (docs/rotation.md)."""
    obj = await fleet.kube[MGMT].get(ROTATIONS, name, namespace=NAMESPACE)
    secret = obj["spec"]["newSigningCertificateSecret"]["name"]
    namespace, bundle = TRUST_BUNDLE
    for cluster in fleet.remotes:
        await fleet.kube[cluster].patch_merge(
            CONFIG_MAPS, bundle, {"data": {"roots.pem": root.decode()}}, namespace=namespace
        )
    previous = await fleet.issuances()
    for cluster in fleet.remotes:
        await fleet.kube[MGMT].patch_merge(
            ISSUED_CERTIFICATES, IC_NAME, {"spec": {"signingCertificateSecret": {"name": secret}}},
            namespace=cluster,
        )  # fmt: skip
    await fleet.finished(previous, within=300)
    await fleet.kube[MGMT].delete(ROTATIONS, name, namespace=NAMESPACE)


async def measure(stack: Stack, *, waves: list[int], floors: int) -> list[Result]:
    clusters = len(stack.remotes)
    async with Fleet(stack) as fleet:
        await fleet.finished(dict.fromkeys(fleet.remotes), within=600)
        floor_times = [await floor_once(fleet, 300 + i) for i in range(floors)]
        floor = statistics.median(floor_times)
        note(f"  floor (one cluster re-issued): {', '.join(f'{t:.2f}' for t in floor_times)} s")
        out = []
        for wave in waves:
            seconds, name, root = await rotate(fleet, wave=wave, within=120 + 30 * clusters)
            note(f"  N={clusters} wave {wave}: {seconds:.1f}s")
            out.append(Result(clusters, wave, seconds, floor))
            await adopt(fleet, name, root)
    return out


def report(results: list[Result]) -> None:
    print("rotation of N clusters' root (ECDSA P-256, 3 steps each, grace 0s):")
    for r in results:
        print(
            f"  N={r.clusters:<3} wave {r.wave:<2} {r.seconds:6.1f}s  = {r.seconds / r.floor:5.1f}"
            f" x floor ({r.floor:.2f}s, one cluster's re-issue)  {r.waves:>3} waves, "
            f"{r.seconds / r.waves:.2f}s each ({r.seconds / r.waves / r.floor:.2f} x floor)"
        )
    by = {(r.clusters, r.wave): r for r in results}
    ns = sorted({r.clusters for r in results})
    ws = sorted({r.wave for r in results})
    if len(ns) > 1:
        small, large = ns[0], ns[-1]
        for w in ws:
            a, b = by[(small, w)], by[(large, w)]
            print(
                f"growth with N ({small} -> {large}), wave {w}: x{b.seconds / a.seconds:.2f} "
                f"(waves x{b.waves / a.waves:.2f})"
            )
    if len(ws) > 1:
        for n in ns:
            a, b = by[(n, ws[0])], by[(n, ws[-1])]
            print(
                f"wave {ws[0]} -> {ws[-1]}, N={n}: x{b.seconds / a.seconds:.2f} "
                f"(waves x{b.waves / a.waves:.2f})"
            )
    print(
        "rotation: " + ", ".join(f"N={r.clusters} wave {r.wave} {r.seconds:.1f}s" for r in results)
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clusters", default="3,20", help="comma-separated fleet sizes")
    parser.add_argument("--waves", default="1,5", help="comma-separated wave sizes")
    parser.add_argument("--floor", type=int, default=3, help="floor samples per stack")
    args = parser.parse_args()
    sizes = [int(n) for n in args.clusters.split(",")]
    waves = [int(w) for w in args.waves.split(",")]
    results: list[Result] = []
    for clusters in sizes:
        note(f"N={clusters}:")
        with stack_of(clusters) as stack:
            results += asyncio.run(measure(stack, waves=waves, floors=args.floor))
    report(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
