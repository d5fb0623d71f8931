"""The supervised local stack as a user runs it: `meshtrust devstack ...`, each command its own
process, the stack owned by the supervisor process that `up` leaves running.

Every wait is for a condition, with a deadline (`devstack.processes.wait_for`).
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from e2e.e2e_audit import ledger

from devstack import processes, supervisor
from devstack.demo import Progress, declarations, report_stuck
from devstack.stack import MGMT, ROOT_CA_SECRET, Stack, StackError, StackInfo
from shared.k8s.client import KubeClient

MESHTRUST = [sys.executable, "-m", "cli"]
IC = ("get", "ic", "-n", "istio-system", "istio-cacerts", "-o", "json")


def meshtrust(
    root: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*MESHTRUST, "devstack", *args, "--root", str(root)],
        capture_output=True, text=True, check=False, timeout=300, env={**os.environ, **(env or {})},
    )  # fmt: skip


def attached(root: Path) -> Stack:
    """A `Stack` for the stack the supervisor of `root` runs: its kubeconfigs, kubectl, NATS."""
    stack = Stack(root, remotes=["east"])
    stack.info = StackInfo.load(root / "stack.json")
    return stack


def supervised(root: Path) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in (supervisor.read(root) or {})["processes"]}


def declare(stack: Stack, *, ttl_days: int = 365) -> None:
    text = declarations("east", key_algorithm="ECDSA", ttl=None)
    stack.kubectl(
        MGMT, "apply", "-f", "-", stdin=text.replace("ttlDays: 365", f"ttlDays: {ttl_days}")
    )


def east_status(stack: Stack) -> dict[str, Any]:
    try:
        return dict(json.loads(stack.kubectl("east", *IC)).get("status") or {})
    except StackError:  # not there yet
        return {}


def finished(stack: Stack, *, other_than: str = "") -> str:
    """East's serial once its IssuedCertificate is FINISHED with a serial not `other_than`."""

    def done() -> bool:
        status = east_status(stack)
        return status.get("state") == "FINISHED" and status.get("serialNumber") != other_than

    processes.wait_for(done, within=120, what="east to be FINISHED")
    return str(east_status(stack)["serialNumber"])


def up(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    result = meshtrust(root, "up", *args)
    assert result.returncode == 0, result.stderr
    return result


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A supervised one-cluster stack, up for the module; wiped afterwards."""
    root = tmp_path_factory.mktemp("supervised") / "devstack"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("KUBECACHEDIR", str(root.parent / "kubecache"))
        try:
            up(root, "--clusters", "1")
            yield root
        finally:
            meshtrust(root, "down", "--purge")


@pytest.mark.timeout(300)
def test_a_killed_service_is_restarted_and_issuance_finishes_again_without_a_hand(
    root: Path,
) -> None:
    stack = attached(root)
    declare(stack)
    first = finished(stack)
    before = supervised(root)
    for name in ("issuer", "agent-east"):
        os.kill(before[name]["pid"], signal.SIGKILL)

    def restarted() -> bool:
        now = supervised(root)
        return all(
            now[n]["state"] == "running" and now[n]["pid"] != before[n]["pid"]
            for n in ("issuer", "agent-east")
        )

    processes.wait_for(restarted, within=60, what="the supervisor to restart issuer and agent")
    declare(stack, ttl_days=300)  # a new certificate, through the restarted services
    assert finished(stack, other_than=first) != first

    status = meshtrust(root, "status")
    assert status.returncode == 0, status.stdout
    rows = {line.split()[0]: line.split() for line in status.stdout.splitlines()[1:]}
    for name in ("issuer", "agent-east"):
        assert rows[name][1:2] == ["running"]
        assert rows[name][3] == "1", "one restart, recorded"
        assert "killed by signal 9" in " ".join(rows[name])
    assert rows["bouncer-east"][3] == "0"
    assert rows["agent-east"][4].endswith("MiB"), "its resident memory"


def test_every_service_answers_its_probe_on_the_port_it_bound_itself(root: Path) -> None:
    for process in StackInfo.load(root / "stack.json").processes:
        if process.name in {"nats-server", "kubeapi"}:
            continue
        assert process.health is not None
        port = int(process.health.rsplit(":", 1)[1].split("/")[0])
        assert processes.listens(process.pid, port), process
        assert processes.probe(process)


@pytest.mark.timeout(300)
def test_an_operator_stops_starts_and_restarts_one_service(root: Path) -> None:
    bouncer = supervised(root)["bouncer-east"]
    stopped = meshtrust(root, "stop", "bouncer-east")
    assert stopped.returncode == 0, stopped.stderr
    assert not processes.alive(bouncer["pid"])
    agent = supervised(root)["agent-east"]
    restarted = meshtrust(root, "restart", "agent-east")
    assert restarted.returncode == 0, restarted.stderr
    now = supervised(root)
    assert now["agent-east"]["pid"] != agent["pid"]
    assert now["agent-east"]["restarts"] == agent["restarts"] + 1
    # Several supervisor steps later (it answered the restart): a stopped process stays stopped.
    assert now["bouncer-east"]["state"] == "stopped"
    assert "stopped" in meshtrust(root, "status").stdout

    started = meshtrust(root, "start", "bouncer-east")
    assert started.returncode == 0, started.stderr
    fresh = StackInfo.load(root / "stack.json")
    assert processes.probe(next(p for p in fresh.processes if p.name == "bouncer-east"))

    unknown = meshtrust(root, "restart", "agent-nowhere")
    assert unknown.returncode == 1
    assert "agent-nowhere" in unknown.stderr


def test_the_demo_names_a_stuck_cluster_and_what_holds_it(root: Path) -> None:
    assert meshtrust(root, "stop", "issuer").returncode == 0
    stack = attached(root)
    out = io.StringIO()

    async def report() -> None:
        async with KubeClient.from_kubeconfig(stack.kubeconfig(MGMT)) as mgmt:
            progress = {"east": Progress("east", state="ISSUING", error="no signature yet")}
            await report_stuck(stack, progress, mgmt, out=out, final=True)

    try:
        asyncio.run(report())
    finally:
        assert meshtrust(root, "start", "issuer").returncode == 0
    line = out.getvalue()
    assert line.startswith("  gave up on east: east is ISSUING: no signature yet; mgmt says")
    assert "not running: issuer stopped (stopped by stop)" in line


@pytest.mark.timeout(400)
def test_down_then_up_resumes_with_the_same_root_and_serial_and_no_new_signature(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No "nothing happened" is waited for: the resumed stack then issues a changed declaration
    (the same key, so the issuer and the agent handle it after their start-up pass over it) and
    the ledger has exactly one more entry: a re-issue at start-up would have made two."""
    monkeypatch.setenv("KUBECACHEDIR", str(tmp_path / "kubecache"))
    root = tmp_path / "devstack"
    try:
        up(root, "--clusters", "1")
        stack = attached(root)
        declare(stack)
        serial = finished(stack)
        root_ca = _root_cert(stack)
        signed = asyncio.run(ledger(stack))
        assert len(signed) == 1

        down = meshtrust(root, "down")
        assert "state kept" in down.stdout, down.stdout
        assert meshtrust(root, "status").returncode == 1
        assert "resumed" in up(root).stdout  # the kept clusters, without --clusters

        stack = attached(root)
        assert east_status(stack)["serialNumber"] == serial
        assert _root_cert(stack) == root_ca
        assert asyncio.run(ledger(stack)) == signed, "nothing signed again"
        # The resumed stack works: a changed declaration is issued, and signed once.
        declare(stack, ttl_days=300)
        assert finished(stack, other_than=serial) != serial
        assert len(asyncio.run(ledger(stack))) == 2
    finally:
        meshtrust(root, "down", "--purge")
    assert not root.exists()


def test_up_fails_naming_the_process_that_died_and_its_last_log_lines(tmp_path: Path) -> None:
    root = tmp_path / "devstack"
    try:
        result = meshtrust(
            root, "up", "--clusters", "1", env={"MESHTRUST_BOUNCER_ACK_WAIT": "not-a-number"}
        )
        assert result.returncode == 1
        assert "bouncer-east exited" in result.stderr, result.stderr
        assert "ack_wait" in result.stderr, "its last log lines say why"
        assert supervisor.running(root) is None
        assert not (root / "kube").exists(), "a stack that never came up is not kept"
    finally:
        meshtrust(root, "down", "--purge")


def _root_cert(stack: Stack) -> bytes:
    namespace, name = ROOT_CA_SECRET
    secret = json.loads(stack.kubectl(MGMT, "get", "secret", "-n", namespace, name, "-o", "json"))
    return base64.b64decode(secret["data"]["root-cert.pem"])
