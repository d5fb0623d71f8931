"""deploy/nats/: the example configurations are devstack/natsconfig.py's users, and they work.

- generated files are up to date (`generate.py --check`);
- every per-cluster user has exactly natsconfig's permissions, one credential variable each;
- the real nats-server accepts both files (`-t`), the production one with TLS files and
  nkeys made here;
- compose.conf, run, lets agent-east publish east's events and refuses it west's.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import nats
import nkeys
import pytest
import trustme
from deploykit import REPO

from devstack.natsconfig import (
    ISSUER_USER,
    ClusterUser,
    cluster_block,
    issuer_permissions,
    permissions,
    user_names,
    users_for,
)
from devstack.natsserver import nats_server_binary
from devstack.ports import free_port

NATS = REPO / "deploy" / "nats"
CLUSTERS = ["east", "west"]
# An unquoted `$NAME` value (generate.py writes them only as values: `"key": $NAME`); a `$`
# inside a quoted subject such as "$JS.API.INFO" is not one.
VARIABLE = re.compile(r"(?<=\": )\$([A-Z][A-Z0-9_]*)")


def _parse(path: Path) -> dict[str, Any]:
    """The configuration as data: comment lines dropped, variable references quoted."""
    lines = [line for line in path.read_text().splitlines() if not line.startswith("//")]
    data: dict[str, Any] = json.loads(VARIABLE.sub(r'"$\1"', "\n".join(lines)))
    return data


def _users(config: dict[str, Any]) -> list[dict[str, Any]]:
    """Every user of every account."""
    return [user for account in config["accounts"].values() for user in account["users"]]


def _variables(path: Path) -> set[str]:
    return set(VARIABLE.findall(path.read_text()))


def _public_nkey() -> str:
    seed = nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER)
    return str(nkeys.from_seed(bytearray(seed)).public_key.decode())


def test_the_generated_files_are_up_to_date() -> None:
    result = subprocess.run(
        [sys.executable, str(NATS / "generate.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("name", "credential"), [("nats-server.conf", "nkey"), ("compose.conf", "password")]
)
def test_the_users_are_natsconfigs_with_one_credential_variable_each(
    name: str, credential: str
) -> None:
    users = _users(_parse(NATS / name))
    kind = "NKEY" if credential == "nkey" else "PASSWORD"
    by_variable = {u[credential]: u for u in users}
    assert len(by_variable) == len(users) == len(user_names(CLUSTERS))
    expected = {f"${kind}_{n.upper().replace('-', '_')}": n for n in user_names(CLUSTERS)}
    assert set(by_variable) == set(expected)
    for user in users_for(CLUSTERS):
        entry = by_variable[f"${kind}_{user.name.upper().replace('-', '_')}"]
        assert entry["permissions"] == permissions(user)
        if credential == "password":
            assert entry["user"] == user.name
    issuer = by_variable[f"${kind}_{ISSUER_USER.upper()}"]
    assert issuer["permissions"] == issuer_permissions()  # no stream deletes, purges, updates


def test_a_cluster_identity_is_an_account_that_imports_only_its_own_events() -> None:
    accounts = _parse(NATS / "nats-server.conf")["accounts"]
    east = accounts["agent-east"]
    (user,) = east["users"]
    assert user["nkey"] == "$NKEY_AGENT_EAST"
    imported = [i["service"]["subject"] for i in east["imports"]]
    assert [s for s in imported if s.startswith("meshtrust.v1.")] == [
        "meshtrust.v1.east.csr.requested",
        "meshtrust.v1.east.status.changed",
        "meshtrust.v1.east.bounce.requested",
    ]
    assert user["permissions"]["publish"]["allow"] == imported
    assert user["permissions"]["subscribe"]["allow"] == [
        f"{ClusterUser('agent', 'east').inbox_prefix}.>"
    ]
    assert "jetstream" not in east  # JetStream, and its API, only in the hub
    hub = accounts["MESHTRUST"]
    assert hub["jetstream"] == "enabled"
    for export in hub["exports"]:
        if export["service"] in imported:
            assert "agent-east" in export["accounts"]
        if export["service"].startswith("meshtrust.v1.east."):
            assert export["accounts"] in (["agent-east"], ["bouncer-east"])


def test_the_monitoring_port_listens_on_loopback_only() -> None:
    for name in ("nats-server.conf", "compose.conf"):
        config = _parse(NATS / name)
        assert config["http"].startswith("127.0.0.1:")
        assert "http_port" not in config


def test_production_is_a_three_node_cluster_with_tls_and_jetstream() -> None:
    config = _parse(NATS / "nats-server.conf")
    assert config["server_name"] == "$SERVER_NAME"
    assert len(set(config["cluster"]["routes"])) == 3
    assert config["cluster"]["tls"]["verify"] is True
    # The block the local stack's nodes get too (devstack.natscluster), plus route TLS.
    routes = [f"nats://nats-{i}.nats.meshtrust-nats.svc:6222" for i in range(3)]
    block = cluster_block(name="meshtrust", host="0.0.0.0", port=6222, routes=routes)  # noqa: S104
    assert config["cluster"]["no_advertise"] is True  # pods' addresses mean nothing outside
    assert {k: v for k, v in config["cluster"].items() if k in block} == block
    assert {"cert_file", "key_file", "ca_file"} <= set(config["tls"])
    assert config["jetstream"]["store_dir"]
    assert "password" not in json.dumps(config)  # nkeys only: no secret in the file


def _check(config: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(nats_server_binary()), "-t", "-c", str(config)],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_nats_server_accepts_the_production_configuration(tmp_path: Path) -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("nats-0.nats.meshtrust-nats.svc")
    tls = tmp_path / "tls"
    tls.mkdir()
    ca.cert_pem.write_to_path(tls / "ca.crt")
    cert.cert_chain_pems[0].write_to_path(tls / "tls.crt")
    cert.private_key_pem.write_to_path(tls / "tls.key")
    text = (NATS / "nats-server.conf").read_text()
    config = tmp_path / "nats.conf"
    config.write_text(
        text.replace("/etc/nats/tls", str(tls)).replace("/data/jetstream", str(tmp_path / "js"))
    )
    env = {v: _public_nkey() for v in _variables(config) if v.startswith("NKEY_")}
    env["SERVER_NAME"] = "nats-0"
    result = _check(config, env)
    assert result.returncode == 0, result.stderr
    assert "is valid" in result.stdout + result.stderr
    # ...and refuses it without the credentials (the variables are really read).
    del env["NKEY_AGENT_EAST"]
    assert _check(config, env).returncode != 0


def test_an_installations_configuration_gets_the_public_keys_of_its_seeds(
    tmp_path: Path,
) -> None:
    # What docs/deploy.md tells the operator to run after `meshtrust nats-config`.
    creds = tmp_path / "creds"
    creds.mkdir()
    clusters = ["east", "west", "north"]
    public, seeds = {}, []
    for user in user_names(clusters):
        seed = bytes(nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER))
        (creds / f"{user}.nk").write_bytes(seed + b"\n")
        public[user] = nkeys.from_seed(bytearray(seed)).public_key.decode()
        seeds.append(seed.decode())
    output = tmp_path / "nats.conf"
    options = ["--clusters", ",".join(clusters), "--credentials-dir", str(creds)]
    subprocess.run(
        [sys.executable, str(NATS / "generate.py"), *options, "--output", str(output)],
        check=True,
        timeout=60,
    )
    users = _users(_parse(output))
    assert sorted(u["nkey"] for u in users) == sorted(public.values())
    north = next(u for u in users if u["nkey"] == public["bouncer-north"])
    assert north["permissions"] == permissions(ClusterUser("bouncer", "north"))
    assert not any(seed in output.read_text() for seed in seeds)  # public keys only
    assert _variables(output) == {"SERVER_NAME"}


@pytest.fixture
async def compose_nats(tmp_path: Path) -> AsyncIterator[str]:
    """nats-server with compose.conf as compose runs it (only port and store moved here)."""
    config = tmp_path / "nats.conf"
    config.write_text(
        (NATS / "compose.conf").read_text().replace("/data/jetstream", str(tmp_path / "js"))
    )
    env = {v: f"pw-{v.lower()}" for v in _variables(config)}
    port, monitor = free_port(), free_port()
    process = await asyncio.create_subprocess_exec(
        str(nats_server_binary()),
        *("-c", str(config), "-a", "127.0.0.1", "-p", str(port), "-m", str(monitor)),
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stderr is not None
    try:
        log = []
        async with asyncio.timeout(15):  # the server says when it is ready: no polling
            while b"Server is ready" not in (line := await process.stderr.readline()):
                assert line, b"".join(log).decode()
                log.append(line)
        drain = asyncio.create_task(process.stderr.read(), name="nats-server stderr")
        yield f"nats://127.0.0.1:{port}"
    finally:
        if process.returncode is None:
            process.terminate()
        await process.wait()
    await drain


async def test_compose_conf_confines_an_agent_to_its_cluster(compose_nats: str) -> None:
    violations: asyncio.Queue[str] = asyncio.Queue()

    async def on_error(exc: Exception) -> None:
        await violations.put(str(exc))

    user = ClusterUser("agent", "east")
    async with contextlib.AsyncExitStack() as stack:
        issuer = await nats.connect(
            compose_nats, user=ISSUER_USER, password="pw-password_issuer", max_reconnect_attempts=0
        )
        stack.push_async_callback(issuer.close)
        agent = await nats.connect(
            compose_nats,
            user=user.name,
            password="pw-password_agent_east",
            inbox_prefix=user.inbox_prefix,
            error_cb=on_error,
            max_reconnect_attempts=0,
        )
        stack.push_async_callback(agent.close)
        seen = await issuer.subscribe("meshtrust.v1.>")
        await issuer.flush(timeout=5)
        for cluster, data in (("east", b"1"), ("west", b"2"), ("east", b"3")):
            await agent.publish(f"meshtrust.v1.{cluster}.csr.requested", data)
        await agent.flush(timeout=5)
        # One publisher's messages arrive in order: had west's got through, it would be second.
        first = await seen.next_msg(timeout=10)
        second = await seen.next_msg(timeout=10)
        assert [(m.subject, m.data) for m in (first, second)] == [
            ("meshtrust.v1.east.csr.requested", b"1"),
            ("meshtrust.v1.east.csr.requested", b"3"),
        ]
        message = await asyncio.wait_for(violations.get(), timeout=10)
        assert "permissions violation" in message.lower()
        assert "meshtrust.v1.west" in message


def _nats_config(*options: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "cli", "nats-config", "--clusters", "east", *options]
    return subprocess.run(
        command, capture_output=True, text=True, timeout=60, check=False, cwd=REPO
    )


def test_nats_config_prints_one_node_of_a_cluster_that_nats_server_accepts(
    tmp_path: Path,
) -> None:
    routes = [f"nats://nats-{i}.nats:6222" for i in range(3)]
    result = _nats_config(
        *("--credentials-dir", str(tmp_path / "creds"), "--store-dir", str(tmp_path / "js")),
        *("--routes", ",".join(routes), "--server-name", "nats-1", "--cluster-port", "7222"),
    )
    assert result.returncode == 0, result.stderr
    config = json.loads(result.stdout)
    assert config["server_name"] == "nats-1"
    anywhere = "0.0.0.0"  # noqa: S104 - the default listen address of nats-config
    assert config["cluster"] == cluster_block(
        name="meshtrust", host=anywhere, port=7222, routes=routes
    )
    path = tmp_path / "nats.conf"
    path.write_text(result.stdout)
    checked = _check(path, {})
    assert checked.returncode == 0, checked.stderr
    # A clustered node without its own name is refused before anything is written.
    refused = _nats_config("--credentials-dir", str(tmp_path / "none"), "--routes", routes[0])
    assert refused.returncode == 2
    assert "--server-name" in refused.stderr
    assert not (tmp_path / "none").exists()
