"""`meshtrust ledger` lists what the issuer signed, from the append-only ledger stream."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

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
