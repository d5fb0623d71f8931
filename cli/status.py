"""`meshtrust status`: every IssuedCertificate declared in the management cluster, as a table.

The issuer mirrors each remote cluster's state onto its declaration, so one list of the
management cluster shows every cluster: cluster (the declaration's namespace), name, state,
when the issuer last heard from the cluster (`status.lastSeenTime`, LAST SEEN), when the
certificate expires (`status.notAfter`, EXPIRES IN), and the error, which says when a cluster is
silent or its certificate expired (docs/issuer.md, "Liveness"). Durations are human: "12s ago",
"in 364d", "expired 3m ago". The management cluster is reached through `--kubeconfig`, else
`MESHTRUST_KUBE_KUBECONFIG`, else the local stack's `.devstack/mgmt.kubeconfig` if there is one,
else in-cluster configuration.
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

from cli.running import run_async
from cli.stack import DEFAULT_ROOT
from shared.k8s.config import KubeSettings, client_from_settings
from shared.k8s.errors import KubeError
from shared.k8s.resources import ISSUED_CERTIFICATES

HELP = "show every IssuedCertificate across the management cluster"
COLUMNS = ("CLUSTER", "NAME", "STATE", "LAST SEEN", "EXPIRES IN", "ERROR")
ERROR_WIDTH = 200


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--kubeconfig", type=Path, help="the management cluster's kubeconfig")
    parser.add_argument("--context")


def settings_for(args: argparse.Namespace) -> KubeSettings:
    settings = KubeSettings()
    if args.kubeconfig is not None:
        return settings.model_copy(update={"kubeconfig": args.kubeconfig, "context": args.context})
    local = DEFAULT_ROOT / "mgmt.kubeconfig"
    if settings.kubeconfig is None and local.exists():
        return settings.model_copy(update={"kubeconfig": local})
    return settings


def human(delta: timedelta) -> str:
    """A duration in its largest unit: 45s, 12m, 5h, 364d."""
    seconds = int(abs(delta.total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _parsed(value: object) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def last_seen(value: object, now: datetime) -> str:
    when = _parsed(value)
    return f"{human(now - when)} ago" if when is not None else ""


def expires_in(value: object, now: datetime) -> str:
    when = _parsed(value)
    if when is None:
        return ""
    return f"in {human(when - now)}" if when > now else f"expired {human(now - when)} ago"


def rows(items: list[dict[str, Any]], *, now: datetime | None = None) -> list[tuple[str, ...]]:
    now = now or datetime.now(UTC)
    result: list[tuple[str, ...]] = []
    for item in sorted(items, key=lambda i: (i["metadata"]["namespace"], i["metadata"]["name"])):
        status = item.get("status") or {}
        result.append(
            (
                item["metadata"]["namespace"],
                item["metadata"]["name"],
                status.get("state", "PENDING"),
                last_seen(status.get("lastSeenTime"), now),
                expires_in(status.get("notAfter"), now),
                (status.get("error") or "")[:ERROR_WIDTH],
            )
        )
    return result


def table(lines: list[tuple[str, ...]], out: TextIO) -> None:
    cells = [COLUMNS, *lines]
    widths = [max(len(line[i]) for line in cells) for i in range(len(COLUMNS))]
    for line in cells:
        out.write("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() + "\n")
    if not lines:
        out.write("(no IssuedCertificates declared)\n")


async def _run(args: argparse.Namespace, out: TextIO) -> int:
    async with client_from_settings(settings_for(args)) as client:
        listed = await client.list(ISSUED_CERTIFICATES)
    table(rows(listed.items), out)
    return 0


def run(args: argparse.Namespace) -> int:
    return run_async("status", _run(args, sys.stdout), errors=(KubeError,))
