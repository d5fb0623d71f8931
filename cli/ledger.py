"""`meshtrust ledger`: list every signature of the central CA, from the ledger stream.

Reads `MESHTRUST_LEDGER` (the issuer's append-only stream) with the NATS settings of the
environment (`MESHTRUST_NATS_*`), or those of a recorded local stack (`cli.connect`);
`--nats-url` overrides the servers. Prints a table, or one JSON
object per line with `--json`. Never provisions anything: a missing ledger is an error.
The entry format is the issuer's `LedgerEntry` (schema_version 1), read here as plain JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any, TextIO

from cli.connect import reader_settings
from shared.bus import Bus, BusError
from shared.bus.ledger import Ledger, LedgerError

HELP = "list the issuance ledger (every certificate the issuer signed)"

LEDGER_STREAM = "MESHTRUST_LEDGER"
LEDGER_SUBJECT_PREFIX = "meshtrust.ledger"
"""Must equal services/issuer/ledger.py (a test checks it)."""

COLUMNS = (
    ("SEQ", "sequence"),
    ("SIGNED AT", "signed_at"),
    ("CLUSTER", "cluster"),
    ("NAME", "name"),
    ("GEN", "declaration_generation"),
    ("SERIAL", "serial_number"),
    ("NOT AFTER", "not_after"),
    ("ISSUANCE", "issuance"),
    ("SIGNED BY", "signed_by"),
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--nats-url", action="append", help="NATS server (repeatable)")
    parser.add_argument("--cluster", help="only signatures for this cluster")
    parser.add_argument("--from", dest="start", type=int, default=1, help="first sequence")
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    parser.add_argument("--stream", default=LEDGER_STREAM, help=argparse.SUPPRESS)


def run(args: argparse.Namespace) -> int:
    try:
        return asyncio.run(_run(args, sys.stdout))
    except (BusError, LedgerError) as exc:
        print(f"meshtrust ledger: {exc}", file=sys.stderr)
        return 1


async def _run(args: argparse.Namespace, out: TextIO) -> int:
    settings = reader_settings(args.nats_url)
    rows: list[dict[str, Any]] = []
    async with Bus.connect(settings) as bus:
        ledger = Ledger(
            bus.connection, stream=args.stream, subjects=(f"{LEDGER_SUBJECT_PREFIX}.>",)
        )
        await ledger.check()
        subject = f"{LEDGER_SUBJECT_PREFIX}.{args.cluster}" if args.cluster else None
        async for entry in ledger.read(start=args.start, subject=subject):
            try:
                row = json.loads(entry.data)
            except ValueError:
                row = {"error": "entry is not JSON"}
            if not isinstance(row, dict):
                row = {"error": "entry is not a JSON object"}
            rows.append({"sequence": entry.sequence, **row})
    if args.json:
        for row in rows:
            out.write(json.dumps(row, sort_keys=True) + "\n")
    else:
        _table(rows, out)
    return 0


def _table(rows: list[dict[str, Any]], out: TextIO) -> None:
    cells = [[title for title, _ in COLUMNS]]
    cells += [[str(row.get(field, "")) for _, field in COLUMNS] for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(COLUMNS))]
    for line in cells:
        out.write("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)))
        out.write("\n")
    if not rows:
        out.write("(no signatures)\n")
