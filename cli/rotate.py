"""`meshtrust rotate start|status|approve|abort`: a CertificateRotation, from the terminal.

The commands write and read CertificateRotations in the management cluster (the issuer's
registration namespace, `meshtrust-system` unless `--namespace`); the issuer does the rotation
(docs/rotation.md). `start` creates one (`--clusters` and `--selector`/`-l`, in kubectl's label
selector syntax, narrow it; `--wait` follows it to its end, printing each change of phase and of
every cluster's step, as `meshtrust demo` shows issuance); `status` shows its phase, its
selector and every cluster's progress; `approve` lets the phase it awaits start (Manual approval);
`abort` asks for a rollback (refused by the issuer once DeletingOldRoot has started: the status
says so). Kubernetes only, never NATS; the kubeconfig is found as `meshtrust status` finds it.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from pydantic import ValidationError

from cli.running import run_async
from cli.status import human, settings_for
from shared.api import v1alpha2
from shared.api.durations import parse_duration
from shared.api.rotations import CertificateRotation, Phase
from shared.api.selectors import format_selector, parse_selector
from shared.k8s.config import client_from_settings
from shared.k8s.errors import KubeError, NotFound
from shared.k8s.resources import Resource

HELP = "rotate the signing CA (and root) of every cluster: start, status, approve, abort"
ROTATIONS = Resource(
    v1alpha2.GROUP, v1alpha2.VERSION, CertificateRotation.PLURAL, CertificateRotation.KIND
)
NAMESPACE = "meshtrust-system"
COLUMNS = ("CLUSTER", "STEP", "STATE", "SINCE", "SERIAL", "ERROR")
ENDED = frozenset({Phase.SUCCEEDED, Phase.ROLLED_BACK, Phase.FAILED})


class RotateError(Exception):
    """Something the operator must fix: one line on stderr, exit code 1."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--kubeconfig", type=Path, help="the management cluster's kubeconfig")
    common.add_argument("--context")
    common.add_argument("--namespace", default=NAMESPACE, help="the issuer's namespace")
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    start = sub.add_parser("start", parents=[common], help="create a CertificateRotation")
    start.add_argument("name")
    start.add_argument("--from", dest="old", required=True, help="current CA Secret [ns/]name")
    start.add_argument("--to", dest="new", required=True, help="new CA Secret [ns/]name")
    start.add_argument("--clusters", default="", help="comma-separated (default: every one)")
    start.add_argument(
        "--selector",
        "-l",
        help="only the clusters whose ClusterRegistration's labels match, in kubectl's syntax "
        "('env=prod,tier in (a,b),!legacy'); with --clusters, both must hold",
    )
    start.add_argument(
        "--allow-trust-split",
        action="store_true",
        help="a root rotation narrowed by --clusters/--selector goes on while other clusters "
        "name the same Secret (they keep only the old root); without it, it pauses (TrustSplit)",
    )
    start.add_argument("--wave-size", type=int, default=1)
    start.add_argument("--canary")
    start.add_argument("--manual", action="store_true", help="approve each phase by hand")
    start.add_argument("--pause", default="0s", help="pause between phases (Go duration)")
    start.add_argument("--grace", default="24h", help="grace period before DeletingOldRoot")
    start.add_argument("--wait", action="store_true", help="follow the rotation to its end")
    start.add_argument("--timeout", type=float, default=3600.0, help="--wait: give up after (s)")
    status = sub.add_parser("status", parents=[common], help="show a rotation (or all)")
    status.add_argument("name", nargs="?")
    approve = sub.add_parser("approve", parents=[common], help="start the awaited phase")
    approve.add_argument("name")
    abort = sub.add_parser("abort", parents=[common], help="roll back (before DeletingOldRoot)")
    abort.add_argument("name")


def secret_ref(text: str, namespace: str) -> dict[str, str]:
    """`ns/name` or `name` (in the issuer's namespace)."""
    ns, _, name = text.rpartition("/")
    if not name:
        raise RotateError(f"{text!r} is not a Secret: write [namespace/]name")
    return {"namespace": ns or namespace, "name": name}


def rotation_body(args: argparse.Namespace) -> dict[str, Any]:
    """The CertificateRotation `start` creates, validated by the model before it is sent."""
    spec: dict[str, Any] = {
        "signingCertificateSecret": secret_ref(args.old, args.namespace),
        "newSigningCertificateSecret": secret_ref(args.new, args.namespace),
        "waveSize": args.wave_size,
        "approval": "Manual" if args.manual else "Automatic",
        "pauseBetweenPhases": args.pause,
        "gracePeriod": args.grace,
    }
    clusters = [c.strip() for c in args.clusters.split(",") if c.strip()]
    if clusters:
        spec["clusters"] = clusters
    if args.selector is not None:
        try:
            spec["clusterSelector"] = parse_selector(args.selector).to_wire()
        except ValueError as exc:
            raise RotateError(f"invalid --selector: {exc}") from None
    if args.canary:
        spec["canary"] = args.canary
    if args.allow_trust_split:
        spec["allowTrustSplit"] = True
    body = {
        "apiVersion": v1alpha2.API_VERSION,
        "kind": CertificateRotation.KIND,
        "metadata": {"name": args.name, "namespace": args.namespace},
        "spec": spec,
    }
    try:
        for duration in (args.pause, args.grace):
            parse_duration(duration)
        CertificateRotation.from_object(body)
    except (ValueError, ValidationError) as exc:
        raise RotateError(f"invalid rotation: {_first_error(exc)}") from None
    return body


def _first_error(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        error = exc.errors()[0]
        return f"{'.'.join(map(str, error['loc']))}: {error['msg']}"
    return str(exc)


def report(rotation: CertificateRotation, *, now: datetime | None = None) -> str:
    """The rotation's phase, what it waits for, and one line per cluster."""
    now = now or datetime.now(UTC)
    status = rotation.status
    head = f"rotation {rotation.metadata.name}: {status.phase.value}"
    if status.paused:
        head += " (paused)"
    lines = [head]
    selector = rotation.spec.cluster_selector
    if selector is not None:
        shown = format_selector(selector) or "(every registered cluster)"
        lines.append(f"clusters selected by: {shown}")
    if status.awaiting_approval:
        lines.append(
            f"awaiting approval of {status.awaiting_approval}: "
            f"meshtrust rotate approve {rotation.metadata.name}"
        )
    if status.error:
        lines.append(f"error: {status.error}")
    rows = [
        (
            p.name,
            p.step.value if p.step else "-",
            p.state or "Pending",
            f"{human(now - p.since)} ago" if p.since else "",
            (p.serial_number or "")[:16],
            p.error or "",
        )
        for p in status.clusters
    ]
    cells = [COLUMNS, *rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(COLUMNS))]
    lines.extend(
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells
    )
    return "\n".join(lines) + "\n"


async def _get(client: Any, args: argparse.Namespace, name: str) -> CertificateRotation:
    try:
        raw = await client.get(ROTATIONS, name, namespace=args.namespace)
    except NotFound:
        raise RotateError(f"no CertificateRotation {args.namespace}/{name}") from None
    return CertificateRotation.from_object(raw)


async def _status(client: Any, args: argparse.Namespace, out: TextIO) -> int:
    if args.name:
        out.write(report(await _get(client, args, args.name)))
        return 0
    listed = await client.list(ROTATIONS, namespace=args.namespace)
    if not listed.items:
        out.write(f"(no CertificateRotations in {args.namespace})\n")
    for raw in listed.items:
        out.write(report(CertificateRotation.from_object(raw)))
    return 0


async def _approve(client: Any, args: argparse.Namespace, out: TextIO) -> int:
    rotation = await _get(client, args, args.name)
    awaiting = rotation.status.awaiting_approval
    if not awaiting:
        raise RotateError(f"rotation {args.name} awaits no approval ({rotation.status.phase})")
    patch = {"spec": {"approvedPhase": awaiting}}
    await client.patch_merge(ROTATIONS, args.name, patch, namespace=args.namespace)
    out.write(f"rotation {args.name}: {awaiting} approved\n")
    return 0


async def _abort(client: Any, args: argparse.Namespace, out: TextIO) -> int:
    rotation = await _get(client, args, args.name)
    if rotation.status.phase in (Phase.DELETING_OLD_ROOT, *ENDED):
        raise RotateError(
            f"rotation {args.name} is {rotation.status.phase}: too late to abort "
            "(docs/rotation.md, 'Rolling back')"
        )
    patch = {"spec": {"abort": True}}
    await client.patch_merge(ROTATIONS, args.name, patch, namespace=args.namespace)
    out.write(f"rotation {args.name}: abort requested; it rolls back\n")
    return 0


async def _start(client: Any, args: argparse.Namespace, out: TextIO) -> int:
    await client.create(ROTATIONS, rotation_body(args))
    out.write(f"rotation {args.name} created\n")
    if not args.wait:
        return 0
    return await follow(client, args, out)


async def follow(client: Any, args: argparse.Namespace, out: TextIO) -> int:
    """Print each change of the rotation until it ends (0 on Succeeded) or `--timeout`."""
    deadline = time.monotonic() + args.timeout
    shown = ""
    while time.monotonic() < deadline:
        rotation = await _get(client, args, args.name)
        text, progress = report(rotation), _without_since(rotation)
        if progress != shown:
            out.write(text)
            out.flush()
            shown = progress
        if rotation.status.phase in ENDED:
            return 0 if rotation.status.phase is Phase.SUCCEEDED else 1
        await asyncio.sleep(1.0)  # polling the API server, as kubectl --watch would stream
    raise RotateError(f"rotation {args.name} did not end within {args.timeout:g}s")


def _without_since(rotation: CertificateRotation) -> str:
    """What `--wait` compares: everything but the ever-growing `since` ages."""
    status = rotation.status
    cells = [(p.name, p.step, p.state, p.serial_number, p.error) for p in status.clusters]
    return repr((status.phase, status.paused, status.error, status.awaiting_approval, cells))


ACTIONS = {"start": _start, "status": _status, "approve": _approve, "abort": _abort}


async def execute(args: argparse.Namespace, out: TextIO) -> int:
    """Run the parsed `meshtrust rotate ...` against the management cluster."""
    async with client_from_settings(settings_for(args)) as client:
        return await ACTIONS[args.action](client, args, out)


def run(args: argparse.Namespace) -> int:
    return run_async("rotate", execute(args, sys.stdout), errors=(KubeError, RotateError))
