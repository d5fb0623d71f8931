"""`meshtrust ledger`: list every signature of the central CA, from the ledger stream.

Reads `MESHTRUST_LEDGER` (the issuer's append-only stream) with the NATS settings of the
environment (`MESHTRUST_NATS_*`), or those of a recorded local stack (`cli.connect`);
`--nats-url` overrides the servers. Prints a table, or one JSON
object per line with `--json`. Never provisions anything: a missing ledger is an error.
The entry format is the issuer's `LedgerEntry` (schema_version 1), read here as plain JSON.

An entry that is not such a record (bytes that are not JSON, JSON that is not an object, a field
missing or of the wrong type, a cluster other than its subject's) is listed as malformed, with
its sequence and a short reason, never as a blank row: something wrote to the ledger that the
issuer did not, and the operator must see it. Its payload is not shown (it could hold anything).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, TextIO

from cli.connect import reader_settings
from cli.running import run_async
from shared.bus import Bus, BusError
from shared.bus.ledger import ConfigurationHidden, Ledger, LedgerError

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
    return run_async("ledger", _run(args, sys.stdout), errors=(BusError, LedgerError))


async def _run(args: argparse.Namespace, out: TextIO) -> int:
    settings = reader_settings(args.nats_url)
    async with Bus.connect(settings) as bus:
        rows = await read_rows(
            bus, stream=args.stream, cluster=args.cluster, start=args.start, err=sys.stderr
        )
    if args.json:
        for row in rows:
            out.write(json.dumps(row, sort_keys=True) + "\n")
    else:
        _table(rows, out)
    return 0


async def read_rows(
    bus: Bus, *, stream: str, cluster: str | None, start: int, err: TextIO
) -> list[dict[str, Any]]:
    """The ledger's entries as rows. The ledger is first checked to be append-only where this
    identity may read a stream's configuration; the auditor's credential may not (it reads by
    direct get only: docs/bus.md), and then that is said on `err`, not failed on."""
    ledger = Ledger(bus.connection, stream=stream, subjects=(f"{LEDGER_SUBJECT_PREFIX}.>",))
    try:
        await ledger.check()
    except ConfigurationHidden:
        err.write(
            f"note: this NATS identity may not read {stream}'s configuration, so its "
            "append-only settings were not checked here (the issuer checks them at start)\n"
        )
    subject = f"{LEDGER_SUBJECT_PREFIX}.{cluster}" if cluster else None
    return [
        parse_row(entry.sequence, entry.subject, entry.data)
        async for entry in ledger.read(start=start, subject=subject)
    ]


REQUIRED: dict[str, type | tuple[type, ...]] = {
    "schema_version": int,
    "serial_number": str,
    "cluster": str,
    "namespace": str,
    "name": str,
    "declaration_uid": str,
    "declaration_generation": int,
    "issuance": str,
    "hosts": list,
    "org": str,
    "not_before": str,
    "not_after": str,
    "csr_public_key_fingerprint": str,
    "certificate_fingerprint": str,
    "signing_ca_fingerprint": str,
    "signed_by": str,
    "signed_at": str,
}
"""The fields of a `LedgerEntry` as JSON (services/issuer/ledger.py; a test checks they agree)."""


def parse_row(sequence: int, subject: str, data: bytes) -> dict[str, Any]:
    """The entry as a row, or `{"sequence", "malformed": reason}` when it is not a ledger entry."""
    try:
        row = json.loads(data)
    except (ValueError, RecursionError):  # invalid UTF-8 and huge integers are ValueErrors
        return _malformed(sequence, "not UTF-8 JSON")
    if not isinstance(row, dict):
        return _malformed(sequence, "JSON but not an object")
    for field, kind in REQUIRED.items():
        if field not in row:
            return _malformed(sequence, f"no {field}")
        value = row[field]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            return _malformed(sequence, f"{field} is not a {getattr(kind, '__name__', kind)}")
    if row["schema_version"] != 1:
        return _malformed(sequence, f"schema_version {row['schema_version']} is not 1")
    if extra := sorted(set(row) - set(REQUIRED)):
        return _malformed(sequence, f"unknown field {extra[0][:40]!r}")
    if subject != f"{LEDGER_SUBJECT_PREFIX}.{row['cluster']}":
        return _malformed(sequence, "its cluster is not its subject's")
    return {"sequence": sequence, **row}


def _malformed(sequence: int, reason: str) -> dict[str, Any]:
    return {"sequence": sequence, "malformed": reason}


def _table(rows: list[dict[str, Any]], out: TextIO) -> None:
    cells = [[title for title, _ in COLUMNS]]
    cells += [[str(row.get(field, "")) for _, field in COLUMNS] for row in rows if not _bad(row)]
    widths = [max(len(line[i]) for line in cells) for i in range(len(COLUMNS))]
    lines = iter(cells)
    for row in [None, *rows]:
        if row is not None and _bad(row):
            seq = str(row["sequence"]).ljust(widths[0])
            out.write(f"{seq}  MALFORMED ENTRY: {row['malformed']}\n")
            continue
        line = next(lines)
        out.write("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)))
        out.write("\n")
    if not rows:
        out.write("(no signatures)\n")


def _bad(row: dict[str, Any]) -> bool:
    return "malformed" in row
