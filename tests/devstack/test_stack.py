"""The local stack as separate OS processes: up, status, one process killed and restarted, down."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from devstack.stack import Stack, StackError, StackInfo, status


def test_the_stack_comes_up_survives_a_killed_agent_and_goes_down(tmp_path: Path) -> None:
    root = tmp_path / "devstack"
    stack = Stack(root, remotes=["east"], pod_ready_delay=0.05)
    try:
        info = stack.up()
        recorded = StackInfo.load(root / "stack.json")
        assert set(recorded.clusters) == {"mgmt", "east"}
        assert all(Path(c["kubeconfig"]).exists() for c in recorded.clusters.values())
        assert recorded.nats_url == info.nats_url
        assert status(root) == {
            "nats-server": True,
            "kubeapi": True,
            "issuer": True,
            "agent-east": True,
            "bouncer-east": True,
        }
        # The real kubectl sees the CRDs and the root CA Secret the stack seeded.
        assert "issuedcertificates" in stack.kubectl("mgmt", "api-resources", "-o", "name")
        assert "root-ca" in stack.kubectl("mgmt", "get", "secrets", "-n", "meshtrust-system")
        assert "istiod" in stack.kubectl("east", "get", "deployments", "-n", "istio-system")

        old = stack.process("agent-east").pid
        stack.kill("agent-east", signal.SIGKILL)
        assert status(root)["agent-east"] is False
        fresh = stack.start("agent-east")
        assert fresh.pid != old
        assert status(root)["agent-east"] is True
    finally:
        stopped = stack.down()
    assert "agent-east" in stopped
    assert status(root) == {}
    # The clusters' state stays for the next up, readable by its owner only (Secrets, keys).
    assert stack.kept_clusters() == ["east"]
    assert (root / "kube").stat().st_mode & 0o777 == 0o700
    assert stack.down(purge=True) == []
    assert not root.exists()


def test_up_on_a_kept_state_of_other_clusters_refuses_and_starts_nothing(tmp_path: Path) -> None:
    root = tmp_path / "devstack"
    (root / "kube").mkdir(parents=True)
    (root / "kube" / "seeded.json").write_text('["east"]\n')
    stack = Stack(root, remotes=["west"])
    with pytest.raises(StackError, match=r"keeps a stack of clusters east.*down --purge"):
        stack.up()
    assert not (root / "stack.json").exists()
    assert stack.kept_clusters() == ["east"], "the kept state is left as it was"
