"""`meshtrust demo`: the main job end to end on the local stack.

Brings the stack up under its supervisor (`devstack.supervisor`), declares an
IssuedCertificate and a PodBounceDirective for every remote cluster in `mgmt`
(`deploy/examples/declarations.yaml`, applied with kubectl),
follows each remote IssuedCertificate until FINISHED (or FAILED), then checks what a platform
team would: every cluster's `cacerts` chains to the shared root (`openssl verify`), the bundle
passes `shared.pki.check_bundle`, and the istiod-like pods were replaced. Prints the start-up
time and the stack's total resident memory (once up and at the end) and a summary table, and
stops the stack unless `keep` (wiping it when every cluster verified; keeping its state and logs
for a look when not). A cluster not done is named every `REPORT_EVERY` seconds
with what holds it (its state and error here and in mgmt, and its processes as the supervisor
sees them), so the demo never waits silently.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import functools
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from devstack import supervisor
from devstack.stack import MGMT, REPO, ROOT_CA_SECRET, Stack, StackError, kept_clusters
from shared.k8s.client import KubeClient
from shared.k8s.errors import NotFound
from shared.k8s.resources import ISSUED_CERTIFICATES, PODS, SECRETS
from shared.pki import Bundle, check_bundle

IC_NAME = "istio-cacerts"
IC_NAMESPACE = "istio-system"
HOSTS = ["spiffe://cluster.local/ns/istio-system/sa/citadel"]
ORG = "meshtrust"
REPORT_EVERY = 10.0
"""Seconds between two reports of the clusters not done yet."""


@dataclass
class Progress:
    cluster: str
    state: str = "-"
    error: str = ""
    serial: str = ""
    not_after: str = ""
    issued_after: float | None = None
    finished_after: float | None = None
    chain_ok: bool = False
    bundle_ok: bool = False
    pods_replaced: bool = False

    @property
    def done(self) -> bool:
        return self.state in {"FINISHED", "FAILED"}

    @property
    def verified(self) -> bool:
        return self.state == "FINISHED" and self.chain_ok and self.bundle_ok and self.pods_replaced


def declarations(cluster: str, *, key_algorithm: str, ttl: str | None) -> str:
    text = (REPO / "deploy" / "examples" / "declarations.yaml").read_text()
    text = text.replace("CLUSTER", cluster)
    if key_algorithm.upper() == "RSA":
        text = text.replace("keyAlgorithm: ECDSA", "keyAlgorithm: RSA")
        text = text.replace("keySize: 256", "keySize: 4096")
    if ttl:
        text = text.replace("ttlDays: 365", f"ttl: {ttl}")
    return text


async def _pods(client: KubeClient) -> set[str]:
    listed = await client.list(PODS, namespace=IC_NAMESPACE, label_selector={"app": "istiod"})
    return {p["metadata"]["name"] for p in listed.items}


async def follow(
    stack: Stack,
    progress: dict[str, Progress],
    *,
    declared: dict[str, str],
    within: float,
    out: TextIO,
) -> None:
    """Declare, then poll every remote IssuedCertificate (50 ms) until done or `within` s,
    naming every `REPORT_EVERY` s (and at the end) the clusters not done and why."""
    clients = {c: KubeClient.from_kubeconfig(stack.kubeconfig(c)) for c in [*progress, MGMT]}
    started = time.monotonic()
    try:
        for client in clients.values():
            await client.__aenter__()
        before = {c: await _pods(clients[c]) for c in progress}
        for cluster in progress:
            await asyncio.to_thread(
                stack.kubectl, MGMT, "apply", "-f", "-", stdin=declared[cluster]
            )
        reported = time.monotonic()  # declaring 50 clusters takes a while: not a wait
        while not all(p.done for p in progress.values()):
            if time.monotonic() - started > within:
                await report_stuck(stack, progress, clients[MGMT], out=out, final=True)
                break
            if time.monotonic() - reported >= REPORT_EVERY:
                reported = time.monotonic()
                await report_stuck(stack, progress, clients[MGMT], out=out, final=False)
            for cluster, p in progress.items():
                try:
                    obj = await clients[cluster].get(
                        ISSUED_CERTIFICATES, IC_NAME, namespace=IC_NAMESPACE
                    )
                except NotFound:
                    continue
                status = obj.get("status") or {}
                state = status.get("state", "PENDING")
                elapsed = time.monotonic() - started
                if state != p.state:
                    print(f"  {elapsed:6.2f}s  {cluster:<8} {state}", file=out, flush=True)
                p.state = state
                p.error = status.get("error") or ""
                p.serial = status.get("serialNumber") or ""
                p.not_after = status.get("notAfter") or ""
                if state in {"ISSUED", "FINISHED"} and p.issued_after is None:
                    p.issued_after = elapsed
                if state == "FINISHED" and p.finished_after is None:
                    p.finished_after = elapsed
            await asyncio.sleep(0.05)
        root = await _root(stack)
        for cluster, p in progress.items():
            if p.state == "FINISHED":
                await _verify(clients[cluster], p, root=root)
                p.pods_replaced = not (await _pods(clients[cluster]) & before[cluster])
    finally:
        for client in clients.values():
            await client.__aexit__(None, None, None)


async def report_stuck(
    stack: Stack,
    progress: dict[str, Progress],
    mgmt: KubeClient,
    *,
    out: TextIO,
    final: bool,
) -> None:
    """One line per cluster not done: its state and error, its declaration's in mgmt, and its
    processes that are not running (from the supervisor's state)."""
    supervised = {e["name"]: e for e in (supervisor.read(stack.root) or {}).get("processes", [])}
    for cluster, p in progress.items():
        if p.done:
            continue
        try:
            declaration = await mgmt.get(ISSUED_CERTIFICATES, IC_NAME, namespace=cluster)
            status = declaration.get("status") or {}
            in_mgmt = f"mgmt says {status.get('state', 'no status yet')}"
            if status.get("error"):
                in_mgmt += f" ({status['error']})"
        except NotFound:
            in_mgmt = "no declaration in mgmt"
        here = f"is {p.state}" if p.state != "-" else "has no IssuedCertificate yet"
        down = [
            f"{name} {e['state']} ({e['last_exit'] or 'no exit recorded'})"
            for name in sorted(supervised)
            if name in ("issuer", f"agent-{cluster}", f"bouncer-{cluster}")
            or name.startswith("nats-server")  # one node, or nats-server-0..2
            if (e := supervised[name])["state"] != "running"
        ]
        why = "; ".join([f"{cluster} {here}" + (f": {p.error}" if p.error else ""), in_mgmt])
        if down:
            why += "; not running: " + ", ".join(down)
        lead = "gave up on" if final else "still waiting for"
        print(f"  {lead} {cluster}: {why}", file=out, flush=True)


async def _root(stack: Stack) -> bytes:
    namespace, name = ROOT_CA_SECRET
    async with KubeClient.from_kubeconfig(stack.kubeconfig(MGMT)) as client:
        secret = await client.get(SECRETS, name, namespace=namespace)
    return base64.b64decode(secret["data"]["root-cert.pem"])


async def _verify(client: KubeClient, p: Progress, *, root: bytes) -> None:
    secret = await client.get(SECRETS, "cacerts", namespace=IC_NAMESPACE)
    data = {k: base64.b64decode(v) for k, v in secret["data"].items()}
    bundle = Bundle.from_secret_data(data)
    check_bundle(bundle, hosts=HOSTS, org=ORG, now=dt.datetime.now(dt.UTC))
    p.bundle_ok = data["root-cert.pem"].strip() == root.strip()
    p.chain_ok = await asyncio.to_thread(_openssl_verify, root, data)


def _openssl_verify(root: bytes, data: dict[str, bytes]) -> bool:
    """`openssl verify` of the cluster's bundle against the shared root: an independent check."""
    openssl = shutil.which("openssl")
    if openssl is None:
        return False
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        (directory / "root.pem").write_bytes(root)  # the shared root, from mgmt
        (directory / "chain.pem").write_bytes(data["cert-chain.pem"])
        (directory / "cert.pem").write_bytes(data["ca-cert.pem"])
        result = subprocess.run(
            [openssl, "verify", "-CAfile", str(directory / "root.pem"), "-untrusted",
             str(directory / "chain.pem"), str(directory / "cert.pem")],
            capture_output=True, text=True, check=False, timeout=60,
        )  # fmt: skip
    return result.returncode == 0


def summary(progress: dict[str, Progress]) -> str:
    rows = [
        ("cluster", "state", "serial", "notAfter", "to ISSUED", "to FINISHED", "cacerts", "pods")
    ]
    rows.extend(
        (
            p.cluster,
            p.state if not p.error else f"{p.state}: {p.error[:60]}",
            p.serial[:16] + ("…" if len(p.serial) > 16 else ""),
            p.not_after,
            f"{p.issued_after:.2f}s" if p.issued_after is not None else "-",
            f"{p.finished_after:.2f}s" if p.finished_after is not None else "-",
            "chains to root" if p.chain_ok and p.bundle_ok else "NOT VERIFIED",
            "replaced" if p.pods_replaced else "not replaced",
        )
        for p in progress.values()
    )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows)


def _resident(root: Path) -> str:
    sizes = supervisor.resident(root)
    return f"RSS {sum(sizes.values()) / 2**20:.0f} MiB in total, {len(sizes)} processes"


def run(
    *,
    root: Path,
    remotes: list[str],
    key_algorithm: str = "ECDSA",
    ttl: str | None = None,
    keep: bool = False,
    timeout: float = 120.0,
    out: TextIO = sys.stdout,
) -> int:
    """The demo; 0 when every cluster is FINISHED with a verified bundle and replaced pods."""
    if kept_clusters(root) is not None:
        raise StackError(
            f"{root} keeps a stopped stack: resume it with `meshtrust devstack up`, or wipe it "
            "with `meshtrust devstack down --purge` and run the demo again"
        )
    stack = Stack(root, remotes=remotes)
    say = functools.partial(print, file=out, flush=True)
    say(f"starting the local stack in {root}: nats-server, clusters mgmt + {', '.join(remotes)}")
    started = time.monotonic()
    verified = False
    try:
        supervisor.launch(root, remotes=remotes)
        say(f"stack up in {time.monotonic() - started:.1f}s; {_resident(root)}")
        say("declaring IssuedCertificates in mgmt")
        progress = {c: Progress(c) for c in remotes}
        declared = {c: declarations(c, key_algorithm=key_algorithm, ttl=ttl) for c in remotes}
        asyncio.run(follow(stack, progress, declared=declared, within=timeout, out=out))
        say("\n" + summary(progress) + "\n")
        say(_resident(root))
        how = "look around" if keep else "with --keep (make demo DEMO_ARGS=--keep), look around"
        say(f"{how}: kubectl --kubeconfig {stack.kubeconfig(remotes[0])} get ic -A")
        say(f"  {' ' * len(how)}kubectl --kubeconfig {stack.kubeconfig(MGMT)} get ic -A")
        say("  and: meshtrust status, meshtrust audit, meshtrust ledger")
        verified = all(p.verified for p in progress.values())
        return 0 if verified else 1
    finally:
        if keep:
            say("the stack keeps running (supervised); stop it with: meshtrust devstack down")
        else:
            supervisor.shutdown(root, purge=verified)
            if not verified:
                say(f"state and logs kept in {root}; wipe them: meshtrust devstack down --purge")
