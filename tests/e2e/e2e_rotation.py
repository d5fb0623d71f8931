"""What the rotation end-to-end tests share: new CAs in mgmt, the trust probe over the fleet's
`cacerts`, the `meshtrust rotate` command, the rotation read back, and the audit of a rotation
(retire times, bounce windows, pods bounced once per step).

The probe (`support.trust_probe`) reads every remote cluster's `cacerts` through the clusters'
API servers, as the other e2e tests read Secrets, and samples continuously in a task of its own
(`probing`). Waiting is always a poll with a deadline.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from e2e.e2e_audit import events
from e2e.e2e_testing import (
    IC_NAME,
    ISSUED_SECRET,
    SELECTORS,
    PodLog,
    World,
    decoded,
    get_or_none,
    status_of,
)

from devstack.seeding import TRUST_BUNDLE
from devstack.stack import MGMT, Stack
from services.issuer.rotating import CERTIFICATE_ROTATIONS as ROTATIONS
from shared.events.desired import TRUST_EPOCH_ANNOTATION
from shared.k8s.errors import NotFound
from shared.k8s.resources import CONFIG_MAPS, ISSUED_CERTIFICATES, PODS, SECRETS
from shared.pki import (
    KeySpec,
    build_csr,
    create_root_ca,
    generate_private_key,
    load_signing_ca,
    private_key_to_pem,
    sign_intermediate,
)
from support.trust_probe import TrustProbe, retire_times, sample_continuously

ROTATION_NAMESPACE = "meshtrust-system"
MESHTRUST = [sys.executable, "-m", "cli"]
FINAL_PHASES = ("Succeeded", "RolledBack", "Failed")


# --- CAs in mgmt ------------------------------------------------------------------------------


async def put_secret(world: World, name: str, data: Mapping[str, bytes]) -> None:
    """A signing Secret `meshtrust-system/<name>` in mgmt (replaced if it exists)."""
    body = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": ROTATION_NAMESPACE},
        "type": "Opaque",
        "stringData": {k: v.decode() for k, v in data.items()},
    }
    client = world.kube[MGMT]
    with suppress(NotFound):
        await client.delete(SECRETS, name, namespace=ROTATION_NAMESPACE)
    await client.create(SECRETS, body, namespace=ROTATION_NAMESPACE)


async def new_root_secret(world: World, name: str, *, spec: KeySpec | None = None) -> bytes:
    """A new self-signed root CA in mgmt as Secret `name`; its certificate's PEM."""
    data = create_root_ca(
        org="meshtrust e2e",
        common_name=f"meshtrust e2e root {name}",
        ttl=dt.timedelta(days=30),
        now=dt.datetime.now(dt.UTC),
        spec=spec,
    )
    await put_secret(world, name, data)
    return data["root-cert.pem"]


async def signing_data(world: World, name: str) -> dict[str, bytes]:
    secret = await world.kube[MGMT].get(SECRETS, name, namespace=ROTATION_NAMESPACE)
    return decoded(secret)


async def new_intermediate_secret(world: World, name: str, *, under: str) -> bytes:
    """A new signing intermediate (pathLen 1) in mgmt as Secret `name`, signed by the CA of
    Secret `under` (same root); its certificate's PEM."""
    now = dt.datetime.now(dt.UTC)
    parent = load_signing_ca(await signing_data(world, under), now=now)
    key = generate_private_key(KeySpec())
    csr = x509.load_pem_x509_csr(build_csr(key, org="meshtrust e2e", name=name, hosts=[]))
    issued = sign_intermediate(
        csr, parent, hosts=[], org="meshtrust e2e", name=name, ttl=dt.timedelta(days=20),
        now=now, path_len=1,
    )  # fmt: skip
    data = {
        "ca-cert.pem": issued.certificate_pem,
        "ca-key.pem": private_key_to_pem(key),
        "cert-chain.pem": issued.chain_pem,
        "root-cert.pem": issued.root_pem,
    }
    await put_secret(world, name, data)
    return issued.certificate_pem


def certificates(data: bytes) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(data)


def pem(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(Encoding.PEM)


async def pin(world: World, root_pem: bytes) -> None:
    """Every remote cluster's agent trust bundle pins `root_pem` only (the administrator's
    re-pin after a rotation, docs/rotation.md)."""
    namespace, name = TRUST_BUNDLE
    for cluster in world.remotes:
        await world.kube[cluster].patch_merge(
            CONFIG_MAPS, name, {"data": {"roots.pem": root_pem.decode()}}, namespace=namespace
        )


# --- the probe ---------------------------------------------------------------------------------


async def read_fleet(world: World) -> dict[str, dict[str, bytes] | None]:
    """Every remote cluster's `cacerts` data now (None: no such Secret)."""
    return {c: await world.secret(c, ISSUED_SECRET) for c in world.remotes}


@asynccontextmanager
async def probing(world: World, *, interval: float = 0.1) -> AsyncIterator[TrustProbe]:
    """A trust probe sampling the fleet in a task until the block ends (then once more)."""
    probe = TrustProbe()
    stop = asyncio.Event()

    async def read() -> Mapping[str, Mapping[str, bytes] | None]:
        return await read_fleet(world)

    task = asyncio.create_task(
        sample_continuously(probe, read, stop=stop, interval=interval), name="trust probe"
    )
    try:
        yield probe
    finally:
        stop.set()
        await task


async def finished_reports(stack: Stack) -> list[tuple[str, str, dt.datetime]]:
    """(cluster, serial, time) of every FINISHED `status.changed` on the bus: when a cluster
    reported every pod bounced onto that certificate (before the issuer could know it)."""
    out = []
    for event in await events(stack):
        data = event.get("data") or {}
        if (
            event["type"] == "status.changed"
            and data.get("state") == "FINISHED"
            and data.get("name") == IC_NAME
            and data.get("serial_number")
        ):
            out.append((event["cluster"], data["serial_number"], parse_time(event["time"])))
    return out


def parse_time(value: str) -> dt.datetime:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


async def judged_failures(stack: Stack, probe: TrustProbe, *, lifetime: dt.timedelta) -> list[str]:
    """The probe's failures that count, previous intermediates retired `lifetime` after their
    cluster reported FINISHED on the next one; as lines to print."""
    retired = retire_times(probe, await finished_reports(stack), lifetime=lifetime)
    return [str(s) for s in probe.failures(retired=retired)]


# --- bounces --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Window:
    """One cluster's bounce for one issuance: from its first bounce.requested to its last
    bounce.completed (None: never completed)."""

    cluster: str
    issuance: str
    start: dt.datetime
    end: dt.datetime | None


async def bounce_windows(stack: Stack, *, since: dt.datetime) -> list[Window]:
    starts: dict[tuple[str, str], dt.datetime] = {}
    ends: dict[tuple[str, str], dt.datetime] = {}
    for event in await events(stack):
        at = parse_time(event["time"])
        key = (event["cluster"], event["issuance"])
        if event["type"] == "bounce.requested" and at >= since:
            starts[key] = min(at, starts.get(key, at))
        elif event["type"] == "bounce.completed":
            ends[key] = max(at, ends.get(key, at))
    return [Window(c, i, start, ends.get((c, i))) for (c, i), start in starts.items()]


def most_at_once(windows: list[Window]) -> int:
    """The most clusters bouncing at the same moment (an end before a start at one instant).
    A cluster counts once however many of its windows are open: a bounce for a superseded
    issuance ends (with an error) just as the next one of the same cluster is asked for."""
    edges = []
    for w in windows:
        edges.append((w.start, 1, w.cluster))
        if w.end is not None:
            edges.append((w.end, -1, w.cluster))
    edges.sort(key=lambda edge: (edge[0], edge[1]))
    open_: dict[str, int] = {}
    most = 0
    for _, step, cluster in edges:
        open_[cluster] = open_.get(cluster, 0) + step
        most = max(most, sum(1 for n in open_.values() if n > 0))
    return most


def bounces_per_cluster(windows: list[Window]) -> dict[str, int]:
    out: dict[str, int] = {}
    for w in windows:
        out[w.cluster] = out.get(w.cluster, 0) + 1
    return out


async def pods_settled(world: World) -> bool:
    """Every selector of every cluster runs exactly its replicas, none terminating: the pods of
    an earlier bounce are gone (a pod in its grace period is listed until the kubelet deletes
    it, and would be counted as one bounced by the next test)."""
    for cluster in world.remotes:
        for selector in SELECTORS:
            listed = await world.kube[cluster].list(
                PODS, namespace=selector.namespace, label_selector={"app": selector.app}
            )
            if len(listed.items) != selector.replicas or any(
                p["metadata"].get("deletionTimestamp") for p in listed.items
            ):
                return False
    return True


def pods_replaced(pods: PodLog, cluster: str, *, times: int, exact: bool = True) -> list[str]:
    """What is wrong with `cluster`'s pods if each selector's were not replaced exactly
    `times` times (`exact=False`: at most, as a bounce for a superseded issuance stops between
    selectors), each pod once (every pod deleted was there, none twice): [] when right."""
    problems = []
    for selector in SELECTORS:
        record = pods.records[(cluster, selector.namespace)]
        where = f"{cluster} {selector.namespace}"
        expected = selector.replicas * times
        added, deleted = len(record.added), len(record.deleted)
        if (added != expected) if exact else not (selector.replicas <= added <= expected):
            problems.append(f"{where}: {added} pods added, expected {expected}")
        if deleted != added:
            problems.append(f"{where}: {deleted} pods deleted, {added} added")
        if not set(record.initial) <= set(record.deleted):
            problems.append(f"{where}: a pod of before the rotation was never bounced")
        alive = set(record.initial) | set(record.added)
        if len(alive - set(record.deleted)) != selector.replicas:
            problems.append(f"{where}: running {sorted(alive - set(record.deleted))}")
    return problems


# --- the rotation ---------------------------------------------------------------------------


async def meshtrust(stack: Stack, *args: str) -> str:
    """`meshtrust ARGS --kubeconfig <mgmt>` as its own process; its standard output. In a
    thread: the event loop keeps serving the probe and the pods' watches meanwhile (a blocked
    loop lets their connection timeouts run out)."""
    command = [*MESHTRUST, *args, "--kubeconfig", str(stack.kubeconfig(MGMT))]
    result = await asyncio.to_thread(
        subprocess.run, command, capture_output=True, text=True, check=False, timeout=60
    )
    assert result.returncode == 0, f"meshtrust {' '.join(args)}: {result.stderr}{result.stdout}"
    return result.stdout


async def rotation(world: World, name: str) -> dict[str, Any] | None:
    return await get_or_none(world.kube[MGMT], ROTATIONS, name, ROTATION_NAMESPACE)


async def wait_rotation(
    world: World, name: str, *, phase: str, within: float, seen: list[str] | None = None
) -> dict[str, Any]:
    """Poll (50 ms) until rotation `name` is in `phase`; AssertionError with what was seen
    after `within` s, or at once if it ends in another final phase. `seen` collects the
    phases in order."""
    seen = [] if seen is None else seen
    deadline = time.monotonic() + within
    while True:
        obj = await rotation(world, name)
        status = status_of(obj)
        current = status.get("phase")
        if current and (not seen or seen[-1] != current):
            seen.append(current)
        if current == phase:
            assert obj is not None
            return obj
        if current in FINAL_PHASES or time.monotonic() > deadline:
            raise AssertionError(f"rotation {name} not {phase} within {within}s: {seen}, {status}")
        await asyncio.sleep(0.05)


async def wait_cluster_step(
    world: World, name: str, *, step: str, state: str, within: float
) -> str:
    """Poll until some cluster of rotation `name` is on `step` in `state`; its name."""
    deadline = time.monotonic() + within
    while True:
        status = status_of(await rotation(world, name))
        for line in status.get("clusters") or []:
            if line.get("step") == step and line.get("state") == state:
                return str(line["name"])
        if time.monotonic() > deadline:
            raise AssertionError(f"no cluster on {step} {state} within {within}s: {status}")
        await asyncio.sleep(0.02)


async def roots_everywhere(world: World) -> dict[str, list[bytes]]:
    """Every remote cluster's root-cert.pem, as PEM certificates."""
    out = {}
    for cluster, data in (await read_fleet(world)).items():
        assert data is not None, f"{cluster}: no cacerts"
        out[cluster] = [pem(c) for c in certificates(data["root-cert.pem"])]
    return out


async def wait_no_epoch(world: World, *, within: float) -> None:
    """Poll until every remote cluster is FINISHED with no trust epoch left, on its
    IssuedCertificate or on its `cacerts` (the re-issue that follows a deleted rotation)."""
    deadline = time.monotonic() + within
    while True:
        left = []
        for cluster in world.remotes:
            ic = await world.ic(cluster)
            secret = await world.secret_object(cluster, ISSUED_SECRET)
            notes = [
                (obj or {}).get("metadata", {}).get("annotations") or {} for obj in (ic, secret)
            ]
            if status_of(ic).get("state") != "FINISHED" or any(
                TRUST_EPOCH_ANNOTATION in n for n in notes
            ):
                left.append(cluster)
        if not left:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{left} still on a trust epoch after {within}s")
        await asyncio.sleep(0.05)


async def adopt(world: World, secret: str, root_pem: bytes, *, rotation_name: str) -> None:
    """After a Succeeded root rotation: re-pin every agent on the new root, point every
    declaration at the new Secret, wait until all re-issued FINISHED under it, and delete the
    rotation (docs/rotation.md, 'Procedure', step 5)."""
    await pin(world, root_pem)
    previous = await world.issuances()
    for cluster in world.remotes:
        await world.kube[MGMT].patch_merge(
            ISSUED_CERTIFICATES,
            IC_NAME,
            {"spec": {"signingCertificateSecret": {"name": secret}}},
            namespace=cluster,
        )
    await world.wait_finished(previous, within=90)
    await world.kube[MGMT].delete(ROTATIONS, rotation_name, namespace=ROTATION_NAMESPACE)
