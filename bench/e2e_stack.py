"""What bench/e2e.py does on the local stack: one issuance declared, watched until ISSUED and
retired; the stack's CPU per process and when it is idle; what single API requests cost.

The issuance is the same for the stack and for the floor (`bench/e2e.py`'s `floor_once`): one
key spec of `ALGORITHMS`, `HOSTS`, `ORG`, `TTL`. Nothing here measures the floor or prints a
result but a note when a wait runs out (on stderr).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from devstack.stack import ROOT_CA_SECRET, StackInfo
from shared.k8s.client import KubeClient
from shared.k8s.errors import AlreadyExists, NotFound
from shared.k8s.informer import EventType, InformerEvent
from shared.k8s.resources import CONFIG_MAPS, ISSUED_CERTIFICATES, SECRETS, Resource
from shared.pki import KeyAlgorithm, KeySpec, SigningCA, load_signing_ca

REMOTE = "east"
REMOTE_NAMESPACE = "istio-system"
HOSTS = ["spiffe://cluster.local/ns/istio-system/sa/citadel"]
ORG = "meshtrust"
TTL = dt.timedelta(days=365)
ALGORITHMS = {
    "p256": KeySpec(algorithm=KeyAlgorithm.ECDSA, size=256),
    "rsa4096": KeySpec(algorithm=KeyAlgorithm.RSA, size=4096),
}
DONE = frozenset({"ISSUED", "FINISHED"})
DELETE_WITHIN = 30.0  # seconds for FINISHED, then for the remote copy to go, before we go on
# The stack counts as idle when all its processes together used less than QUIET_CPU seconds of
# CPU in QUIET_WINDOW seconds: 2.5 ticks of 10 ms, above the background of bookmarks and idle
# fetches, far below one reconcile pass.
QUIET_WINDOW = 0.2
QUIET_CPU = 0.025


ROLES = Resource("rbac.authorization.k8s.io", "v1", "roles", "Role")
ROLE_BINDINGS = Resource("rbac.authorization.k8s.io", "v1", "rolebindings", "RoleBinding")
BENCH_GRANT = "meshtrust-bench-secrets"


async def grant_bench_secrets(remote: KubeClient) -> None:
    """Let the agent read and write any Secret in `REMOTE_NAMESPACE`: deploy/'s RBAC names the
    Secrets it may use (`cacerts`, its key Secret), and each sample here has Secrets of its own
    name, as a user whose declarations name other Secrets grants them (docs/deploy.md)."""
    meta = {"name": BENCH_GRANT, "namespace": REMOTE_NAMESPACE}
    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": meta,
        "rules": [
            {
                "apiGroups": [""],
                "resources": ["secrets"],
                "verbs": ["get", "update", "patch", "delete"],
            }
        ],
    }
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": meta,
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": BENCH_GRANT},
        "subjects": [
            {"kind": "ServiceAccount", "name": "meshtrust-agent", "namespace": "meshtrust-system"}
        ],
    }
    for resource, body in ((ROLES, role), (ROLE_BINDINGS, binding)):
        with contextlib.suppress(AlreadyExists):
            await remote.create(resource, body, namespace=REMOTE_NAMESPACE)


def cpu_seconds(info: StackInfo) -> dict[str, float]:
    """CPU time (user + system) each stack process has used so far (Linux /proc; 10 ms ticks)."""
    tick = os.sysconf("SC_CLK_TCK")
    out = {}
    for process in info.processes:
        try:
            with open(f"/proc/{process.pid}/stat") as stat:
                fields = stat.read().rsplit(") ", 1)[1].split()
        except OSError:
            continue
        out[process.name] = (int(fields[11]) + int(fields[12])) / tick
    return out


@dataclass
class Sample:
    algorithm: str
    name: str
    started_wall: float
    """time.time() just before the create request, to line up with the services' logs."""
    started: float
    """time.perf_counter() at the same moment."""
    created: float | None = None
    """perf_counter when the create request returned."""
    seen: dict[str, float] = field(default_factory=dict)
    """perf_counter when the remote watch first showed each state (PENDING for 'no status')."""
    cpu: dict[str, float] = field(default_factory=dict)
    """CPU seconds each stack process used from the create request until ISSUED was seen."""

    @property
    def to_issued(self) -> float:
        return min(self.seen[s] for s in DONE if s in self.seen) - self.started


class Remote:
    """Remote IssuedCertificates as a watch sees them: when each name first reached each state."""

    def __init__(self) -> None:
        self.samples: dict[str, Sample] = {}
        self.reached: dict[str, asyncio.Event] = {}
        self.finished: dict[str, asyncio.Event] = {}
        self.gone: dict[str, asyncio.Event] = {}

    def expect(self, sample: Sample) -> None:
        self.samples[sample.name] = sample
        self.reached[sample.name] = asyncio.Event()
        self.finished[sample.name] = asyncio.Event()
        self.gone[sample.name] = asyncio.Event()

    def handle(self, event: InformerEvent) -> None:
        now = time.perf_counter()
        name = event.key.name
        sample = self.samples.get(name)
        if sample is None:
            return
        if event.type is EventType.DELETED:
            self.gone[name].set()
            return
        state = (event.object.get("status") or {}).get("state") or "PENDING"
        sample.seen.setdefault(state, now)
        if state in DONE:
            self.reached[name].set()
        if state in {"FINISHED", "FAILED"}:
            self.finished[name].set()


def declaration(name: str, spec: KeySpec) -> dict[str, Any]:
    return {
        "apiVersion": ISSUED_CERTIFICATES.api_version,
        "kind": ISSUED_CERTIFICATES.kind,
        "metadata": {"name": name, "namespace": REMOTE},
        "spec": {
            "hosts": HOSTS,
            "org": ORG,
            "signingCertificateSecret": {"name": ROOT_CA_SECRET[1], "namespace": ROOT_CA_SECRET[0]},
            "issuedCertificateSecret": {"name": f"{name}-cacerts", "namespace": REMOTE_NAMESPACE},
            "certOptions": {
                "keyAlgorithm": spec.algorithm.value,
                "keySize": spec.size,
                "ttlDays": 365,
            },
        },
    }


async def issue(
    mgmt: KubeClient,
    remote: Remote,
    info: StackInfo,
    *,
    algorithm: str,
    name: str,
    within: float,
) -> Sample:
    spec = ALGORITHMS[algorithm]
    body = declaration(name, spec)
    cpu_before = cpu_seconds(info)
    sample = Sample(algorithm, name, started_wall=time.time(), started=time.perf_counter())
    remote.expect(sample)
    await mgmt.create(ISSUED_CERTIFICATES, body)
    sample.created = time.perf_counter()
    async with asyncio.timeout(within):
        await remote.reached[name].wait()
    cpu_after = cpu_seconds(info)
    sample.cpu = {p: cpu_after[p] - cpu_before[p] for p in cpu_after if p in cpu_before}
    return sample


async def retire(mgmt: KubeClient, remote: Remote, name: str) -> None:
    """Once the issuance is FINISHED, delete the declaration and wait until the agent removed
    the remote copy (`quiet` then waits for the work the agent still does after that)."""
    try:
        async with asyncio.timeout(DELETE_WITHIN):
            await remote.finished[name].wait()
        await mgmt.delete(ISSUED_CERTIFICATES, name, namespace=REMOTE)
        async with asyncio.timeout(DELETE_WITHIN):
            await remote.gone[name].wait()
    except TimeoutError:
        print(f"  note: {name} not FINISHED and gone within {DELETE_WITHIN:.0f} s", file=sys.stderr)


async def quiet(info: StackInfo) -> None:
    """Wait until the stack's processes are idle (see QUIET_CPU): the next issuance must not
    share the agent's event loop with this one's leftovers (after FINISHED the agent makes one
    more pass, which re-checks the bundle: ~0.5 s of CPU with RSA-4096)."""
    deadline = time.monotonic() + DELETE_WITHIN
    before = cpu_seconds(info)
    while time.monotonic() < deadline:
        await asyncio.sleep(QUIET_WINDOW)
        after = cpu_seconds(info)
        busy = sum(after[p] - before[p] for p in after if p in before)
        if busy < QUIET_CPU:
            return
        before = after
    print(f"  note: the stack was not idle within {DELETE_WITHIN:.0f} s", file=sys.stderr)


async def signing_ca(mgmt: KubeClient) -> SigningCA:
    namespace, name = ROOT_CA_SECRET
    secret = await mgmt.get(SECRETS, name, namespace=namespace)
    data = {k: base64.b64decode(v) for k, v in secret["data"].items()}
    return load_signing_ca(data, now=dt.datetime.now(dt.UTC))


async def api_costs(east: KubeClient, *, count: int = 30) -> dict[str, list[float]]:
    """Round trips of single requests to the emulated remote cluster, from this process: what
    each of the services' sequential API calls costs at least. A ConfigMap nobody watches."""
    body = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "bench-probe", "namespace": "default"},
        "data": {"n": "0"},
    }
    times: dict[str, list[float]] = {"GET": [], "PATCH": [], "POST+DELETE": []}
    with contextlib.suppress(NotFound):
        await east.delete(CONFIG_MAPS, "bench-probe", namespace="default")
    await east.create(CONFIG_MAPS, body)
    for i in range(count):
        started = time.perf_counter()
        await east.get(CONFIG_MAPS, "bench-probe", namespace="default")
        times["GET"].append(time.perf_counter() - started)
        started = time.perf_counter()
        await east.patch_merge(
            CONFIG_MAPS, "bench-probe", {"data": {"n": str(i)}}, namespace="default"
        )
        times["PATCH"].append(time.perf_counter() - started)
    await east.delete(CONFIG_MAPS, "bench-probe", namespace="default")
    for _ in range(count // 3):
        started = time.perf_counter()
        await east.create(CONFIG_MAPS, body)
        await east.delete(CONFIG_MAPS, "bench-probe", namespace="default")
        times["POST+DELETE"].append(time.perf_counter() - started)
    return times
