"""The `meshtrust` commands, each against the real thing it reads or writes."""

from __future__ import annotations

import asyncio
import datetime as dt
import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import nkeys
import pytest

from cli import audit, natsconfig, status
from devstack.natsconfig import ClusterUser
from devstack.natsserver import NatsServer
from shared.bus import Bus, NatsSettings, PublishError
from shared.bus.reading import StoredMessage
from shared.events import encode, subject
from support.events import sample_events

MESHTRUST = [sys.executable, "-m", "cli"]


def meshtrust(*args: str) -> str:
    """Run `meshtrust ARGS` as its own process; its standard output."""
    result = subprocess.run(
        [*MESHTRUST, *args], capture_output=True, text=True, check=False, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def every_user(config: dict[str, Any]) -> list[dict[str, Any]]:
    return [user for account in config["accounts"].values() for user in account["users"]]


def test_nats_config_holds_only_public_keys_and_its_seeds_authenticate(tmp_path: Path) -> None:
    credentials = tmp_path / "creds"
    stdout = meshtrust(
        *("nats-config", "--clusters", "east,west", "--credentials-dir", str(credentials)),
        *("--host", "127.0.0.1", "--store-dir", str(tmp_path / "js")),
    )
    config = json.loads(stdout)
    users = every_user(config)
    # issuer, provisioner, auditor, agent and bouncer of each cluster
    assert len(users) == 3 + 2 * 2
    assert all(set(u) <= {"nkey", "permissions"} for u in users), "no password, no seed"
    seeds = list(credentials.glob("*.nk"))
    assert len(seeds) == len(users)
    for seed in seeds:
        assert seed.stat().st_mode & 0o777 == 0o600
        assert seed.read_text().strip() not in stdout, "no seed in the configuration"
    # Re-running keeps everyone's credentials.
    again = meshtrust(
        "nats-config", "--clusters", "east,west", "--credentials-dir", str(credentials)
    )
    keys = sorted(u["nkey"] for u in users)
    assert sorted(u["nkey"] for u in every_user(json.loads(again))) == keys
    kept = (credentials / "agent-east.nk").read_bytes().strip()
    assert natsconfig.seed_for(credentials, "agent-east") == kept


async def test_nats_config_seeds_work_against_nats_server(tmp_path: Path) -> None:
    credentials = tmp_path / "creds"
    config = tmp_path / "nats.conf"
    server = NatsServer(store_dir=tmp_path / "js", log_file=tmp_path / "n.log", config_file=config)
    stdout = await asyncio.to_thread(
        meshtrust,
        *("nats-config", "--clusters", "east", "--credentials-dir", str(credentials)),
        *("--host", "127.0.0.1", "--port", str(server.port), "--store-dir", str(tmp_path / "js")),
    )
    rendered = json.loads(stdout)
    limits = {"default_max_consumers": 1000}  # devstack.natsconfig.consumer_limit(1)
    assert rendered["jetstream"] == {"store_dir": str(tmp_path / "js"), "limits": limits}
    rendered["jetstream"] = {"limits": limits}  # the test's NatsServer passes --store_dir itself
    config.write_text(json.dumps(rendered))
    server.start()
    try:
        provisioner = NatsSettings(
            urls=(server.url,), nkeys_seed_file=credentials / "provisioner.nk"
        )
        async with Bus.connect(provisioner) as bus:
            await bus.provision()
        agent = ClusterUser("agent", "east")
        settings = NatsSettings(
            urls=(server.url,),
            nkeys_seed_file=credentials / "agent-east.nk",
            inbox_prefix=agent.inbox_prefix,
            publish_deadline=1.5,
            request_timeout=0.5,
        )
        async with Bus.connect(settings) as bus:
            await bus.publish(sample_events("east")[0])
            with pytest.raises(PublishError):
                await bus.publish(sample_events("west")[0])
    finally:
        server.stop()
    public = nkeys.from_seed(bytearray((credentials / "agent-east.nk").read_bytes().strip()))
    assert public.public_key.decode() in stdout


NOW = dt.datetime(2026, 12, 7, 12, 0, tzinfo=dt.UTC)


def test_status_rows_show_cluster_state_last_seen_expiry_and_error() -> None:
    items = [
        {
            "metadata": {"namespace": "west", "name": "ca"},
            "status": {
                "state": "FINISHED",
                "error": "liveness: cluster west silent since ...",
                "lastSeenTime": "2026-12-07T11:00:00Z",
                "notAfter": "2026-12-07T11:57:00Z",
            },
        },
        {
            "metadata": {"namespace": "east", "name": "ca"},
            "status": {
                "state": "FINISHED",
                "notAfter": "2027-12-06T12:00:00Z",
                "lastSeenTime": "2026-12-07T11:59:48.5Z",
            },
        },
        {"metadata": {"namespace": "east", "name": "new"}},
    ]
    assert status.rows(items, now=NOW) == [
        ("east", "ca", "FINISHED", "11s ago", "in 364d", ""),
        ("east", "new", "PENDING", "", "", ""),
        (
            "west",
            "ca",
            "FINISHED",
            "1h ago",
            "expired 3m ago",
            "liveness: cluster west silent since ...",
        ),
    ]


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0s"), (59, "59s"), (60, "1m"), (3599, "59m"), (3600, "1h"), (86400 * 2 + 5, "2d")],
)
def test_status_durations_are_human(seconds: int, text: str) -> None:
    assert status.human(dt.timedelta(seconds=seconds)) == text


def test_status_table_has_last_seen_and_expires_in_columns() -> None:
    out = io.StringIO()
    status.table(status.rows([{"metadata": {"namespace": "e", "name": "n"}}], now=NOW), out)
    header = out.getvalue().splitlines()[0]
    assert header.split("  ")[0] == "CLUSTER"
    assert "LAST SEEN" in header
    assert "EXPIRES IN" in header


def test_status_ignores_an_unreadable_time() -> None:
    item = {"metadata": {"namespace": "e", "name": "n"}, "status": {"notAfter": "soon"}}
    assert status.rows([item], now=NOW)[0][4] == ""


@pytest.mark.parametrize("event", sample_events("east"), ids=lambda e: e.type.value)
def test_audit_lines_name_cluster_type_issuance_and_what_happened(event: object) -> None:
    stored = StoredMessage(
        sequence=7,
        subject=subject(event.cluster, event.event_type),  # type: ignore[attr-defined]
        time=event.time,  # type: ignore[attr-defined]
        data=encode(event),  # type: ignore[arg-type]
    )
    issuance, text = audit.line(stored)
    assert issuance == event.issuance  # type: ignore[attr-defined]
    assert " east " in text
    assert event.type.value in text  # type: ignore[attr-defined]
    assert audit.describe(event)  # type: ignore[arg-type]


def test_audit_lists_a_refused_message_with_its_reason() -> None:
    event = sample_events("east")[0]
    stored = StoredMessage(
        sequence=9, subject="meshtrust.v1.west.csr.requested", time=event.time, data=encode(event)
    )
    issuance, text = audit.line(stored)
    assert issuance is None
    assert "refused: SubjectMismatch" in text
