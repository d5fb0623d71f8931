"""`meshtrust status`: every IssuedCertificate declared in the management cluster, as a table.

The issuer mirrors each remote cluster's state onto its declaration, so one list of the
management cluster shows every cluster: cluster (the declaration's namespace), name, state,
error, expiry. The management cluster is reached through `--kubeconfig`, else
`MESHTRUST_KUBE_KUBECONFIG`, else the local stack's `.devstack/mgmt.kubeconfig` if there is one,
else in-cluster configuration.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, TextIO

from cli.running import run_async
from cli.stack import DEFAULT_ROOT
from shared.k8s.config import KubeSettings, client_from_settings
from shared.k8s.errors import KubeError
from shared.k8s.resources import ISSUED_CERTIFICATES

HELP = "show every IssuedCertificate across the management cluster"
COLUMNS = ("CLUSTER", "NAME", "STATE", "ERROR", "EXPIRES")


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


def rows(items: list[dict[str, Any]]) -> list[tuple[str, ...]]:
    result: list[tuple[str, ...]] = []
    for item in sorted(items, key=lambda i: (i["metadata"]["namespace"], i["metadata"]["name"])):
        status = item.get("status") or {}
        result.append(
            (
                item["metadata"]["namespace"],
                item["metadata"]["name"],
                status.get("state", "PENDING"),
                (status.get("error") or "")[:80],
                status.get("notAfter") or "",
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
