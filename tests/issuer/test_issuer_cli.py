"""`meshtrust ledger` lists what the issuer signed, from the append-only ledger stream."""

from __future__ import annotations

import asyncio
import datetime as dt
import io
import json
import sys
from pathlib import Path

import pytest

from cli import ledger as cli_ledger
from cli.__main__ import parser
from issuer.issuer_testing import declaration, running, world
from services.issuer import ledger as issuer_ledger
from shared.bus import NatsSettings


async def meshtrust(*args: str, nats_url: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "cli",
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={"MESHTRUST_NATS_URLS": nats_url, "PATH": "/usr/bin:/bin"},
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def test_the_cli_reads_the_stream_the_issuer_writes() -> None:
    assert cli_ledger.LEDGER_STREAM == issuer_ledger.LEDGER_STREAM
    assert (f"{cli_ledger.LEDGER_SUBJECT_PREFIX}.>",) == issuer_ledger.LEDGER_SUBJECTS


def test_the_cli_has_a_ledger_command() -> None:
    args = parser().parse_args(["ledger", "--cluster", "east", "--json"])
    assert (args.command, args.cluster, args.json) == ("ledger", "east", True)


async def test_meshtrust_ledger_lists_every_signature(
    tmp_path: Path, nats_settings: NatsSettings
) -> None:
    url = nats_settings.urls[0]
    async with world(tmp_path, nats_settings) as w:
        code, out, err = await meshtrust("ledger", nats_url=url)
        assert code == 1
        assert "MESHTRUST_LEDGER does not exist" in err

        async with running(w.settings()):
            serials = {}
            for cluster in ("east", "west"):
                decl = await w.create(declaration(cluster, "istio-ca"))
                agent = w.agent(cluster)
                request = await agent.send(agent.request(decl))
                serials[cluster] = (await w.answers.issued(request.issuance)).data.serial_number

        code, out, err = await meshtrust("ledger", nats_url=url)
        assert code == 0, err
        header, *rows = out.splitlines()
        assert header.split()[:4] == ["SEQ", "SIGNED", "AT", "CLUSTER"]
        assert len(rows) == 2
        assert any(serials["east"] in row and "east" in row for row in rows)

        code, out, err = await meshtrust("ledger", "--json", "--cluster", "west", nats_url=url)
        assert code == 0, err
        entries = [json.loads(line) for line in out.splitlines()]
        assert [(e["cluster"], e["serial_number"]) for e in entries] == [("west", serials["west"])]
        assert entries[0]["signed_by"] == "issuer-a"


def test_the_cli_knows_every_field_of_a_ledger_entry() -> None:
    assert set(cli_ledger.REQUIRED) == set(issuer_ledger.LedgerEntry.model_fields)


def _entry(**changes: object) -> dict[str, object]:
    entry = issuer_ledger.LedgerEntry(
        serial_number="1f",
        cluster="east",
        namespace="east",
        name="istio-ca",
        declaration_uid="u-1",
        declaration_generation=1,
        issuance="0123456789abcdef",
        hosts=("spiffe://east.local/ns/istio-system/sa/istio-ca",),
        org="o",
        not_before=dt.datetime(2026, 12, 1, tzinfo=dt.UTC),
        not_after=dt.datetime(2027, 12, 1, tzinfo=dt.UTC),
        csr_public_key_fingerprint="a" * 64,
        certificate_fingerprint="b" * 64,
        signing_ca_fingerprint="c" * 64,
        signed_by="issuer-a",
        signed_at=dt.datetime(2026, 12, 1, tzinfo=dt.UTC),
    ).model_dump(mode="json")
    entry.update(changes)
    return entry


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b'{"stream":"MESHTRUST","seq":12}', "no schema_version"),
        (b"\xff\xfe", "not UTF-8 JSON"),
        (b"[" * 100_000, "not UTF-8 JSON"),
        (b"9" * 5_000, "not UTF-8 JSON"),
        (b"[1, 2]", "JSON but not an object"),
        (json.dumps(_entry(serial_number=None)).encode(), "serial_number is not a str"),
        (json.dumps(_entry(declaration_generation=True)).encode(), "declaration_generation is"),
        (json.dumps(_entry(schema_version=2)).encode(), "schema_version 2 is not 1"),
        (json.dumps(_entry(smuggled=1)).encode(), "unknown field 'smuggled'"),
        (json.dumps(_entry(cluster="west")).encode(), "its cluster is not its subject's"),
    ],
    ids=[
        "a PubAck stored by a reply-subject injection",
        "bytes that are not UTF-8",
        "deeply nested JSON",
        "an integer past the conversion limit",
        "JSON that is not an object",
        "a field of the wrong type",
        "a boolean where a number belongs",
        "a schema version from the future",
        "an unknown field",
        "another cluster's entry on east's subject",
    ],
)
def test_a_malformed_ledger_entry_is_a_malformed_row_with_its_reason(
    data: bytes, reason: str
) -> None:
    row = cli_ledger.parse_row(7, "meshtrust.ledger.east", data)
    assert row["sequence"] == 7
    assert row["malformed"].startswith(reason)
    assert set(row) == {"sequence", "malformed"}


def test_a_good_entry_is_a_row_and_a_malformed_one_is_shown_as_such_in_the_table() -> None:
    good = cli_ledger.parse_row(1, "meshtrust.ledger.east", json.dumps(_entry()).encode())
    assert "malformed" not in good
    bad = cli_ledger.parse_row(2, "meshtrust.ledger.east", b'{"stream":"MESHTRUST","seq":3}')
    out = io.StringIO()
    cli_ledger._table([good, bad], out)
    header, first, second = out.getvalue().splitlines()
    assert header.startswith("SEQ")
    assert first.split()[0] == "1"
    assert "1f" in first
    assert second.split()[:3] == ["2", "MALFORMED", "ENTRY:"]
    assert second.endswith("no schema_version")


async def test_meshtrust_ledger_shows_junk_in_the_stream_as_malformed_rows(
    tmp_path: Path, nats_settings: NatsSettings
) -> None:
    url = nats_settings.urls[0]
    async with world(tmp_path, nats_settings) as w:
        async with running(w.settings()):
            decl = await w.create(declaration("east", "istio-ca"))
            agent = w.agent("east")
            request = await agent.send(agent.request(decl))
            serial = (await w.answers.issued(request.issuance)).data.serial_number
        js = w.bus.connection.js
        junk = await js.publish("meshtrust.ledger.east", b'{"stream":"MESHTRUST","seq":1}')

        code, out, err = await meshtrust("ledger", nats_url=url)
        assert code == 0, err
        _, *rows = out.splitlines()
        assert len(rows) == 2
        assert serial in rows[0]
        assert rows[1].split()[:2] == [str(junk.seq), "MALFORMED"]

        code, out, err = await meshtrust("ledger", "--json", nats_url=url)
        assert code == 0, err
        entries = [json.loads(line) for line in out.splitlines()]
        assert entries[1] == {"sequence": junk.seq, "malformed": "no schema_version"}
