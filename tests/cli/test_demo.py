"""`meshtrust demo` and `meshtrust devstack` as a user runs them: separate processes."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

MESHTRUST = [sys.executable, "-m", "cli"]


def run(*args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*MESHTRUST, *args], capture_output=True, text=True, check=False, timeout=timeout
    )


@pytest.mark.timeout(300)
def test_the_demo_issues_verifies_and_reports_then_stops_everything(tmp_path: Path) -> None:
    root = tmp_path / "devstack"
    result = run("demo", "--clusters", "1", "--root", str(root))
    assert result.returncode == 0, result.stdout + result.stderr
    summary = [line for line in result.stdout.splitlines() if line.startswith("east ")]
    assert len(summary) == 1, result.stdout
    assert "FINISHED" in summary[0]
    assert "chains to root" in summary[0]
    assert "replaced" in summary[0]
    assert "kubectl --kubeconfig" in result.stdout
    assert re.search(r"stack up in [0-9.]+s; RSS [0-9]+ MiB in total, 6 processes", result.stdout)
    assert not (root / "stack.json").exists(), "without --keep the stack is stopped"


@pytest.mark.timeout(300)
def test_a_kept_stack_is_reported_by_status_and_stopped_by_down(tmp_path: Path) -> None:
    root = tmp_path / "devstack"
    up = run("devstack", "up", "--clusters", "1", "--root", str(root))
    try:
        assert up.returncode == 0, up.stderr
        recorded = json.loads((root / "stack.json").read_text())
        assert set(recorded["clusters"]) == {"mgmt", "east"}
        assert recorded["nats_url"].startswith("nats://")
        status = run("devstack", "status", "--root", str(root))
        assert status.returncode == 0
        assert "agent-east" in status.stdout
        assert "not running" not in status.stdout
        agent = next(line for line in status.stdout.splitlines() if line.startswith("agent-"))
        assert re.search(r"\b[0-9]+MiB\b", agent), status.stdout  # its own RSS
        assert re.search(r"^RSS [0-9]+ MiB in total, 6 processes$", status.stdout, re.M)
    finally:
        down = run("devstack", "down", "--root", str(root))
    assert "agent-east" in down.stdout
    assert run("devstack", "status", "--root", str(root)).returncode == 1
