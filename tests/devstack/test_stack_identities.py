"""The local stack's services run under their own ServiceAccounts, bound by deploy/'s RBAC: each
process is started with its own kubeconfig, whose token the API server knows as that
ServiceAccount and refuses outside its rules; the admin kubeconfig stays cluster-admin; and the
tokens survive a restart of the emulator (the same signing key and serving certificate)."""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from devstack.stack import BIN, MGMT, Stack

SA = "system:serviceaccount:meshtrust-system:meshtrust-"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("identities")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("KUBECACHEDIR", str(root / "kubecache"))
        stack = Stack(root / "devstack", remotes=["east"], pod_ready_delay=0.05)
        try:
            stack.up()
            yield stack
        finally:
            stack.down()


def kubectl(kubeconfig: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = [str(BIN / "kubectl"), "--kubeconfig", str(kubeconfig), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)


def whoami(kubeconfig: Path) -> str:
    result = kubectl(kubeconfig, "auth", "whoami", "-o", "jsonpath={.status.userInfo.username}")
    assert result.returncode == 0, result.stderr
    return result.stdout


def environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode().split("=", 1) for item in raw if b"=" in item)


IDENTITIES = [("issuer", MGMT, "issuer"), ("agent", "east", "agent-east")]
IDENTITIES += [("bouncer", "east", "bouncer-east")]


@pytest.mark.parametrize(("service", "cluster", "process"), IDENTITIES)
def test_each_service_runs_with_its_service_accounts_kubeconfig(
    stack: Stack, service: str, cluster: str, process: str
) -> None:
    kubeconfig = stack.service_kubeconfig(service, cluster)
    assert environ(stack.process(process).pid)["MESHTRUST_KUBE_KUBECONFIG"] == str(kubeconfig)
    assert kubeconfig.stat().st_mode & 0o777 == 0o600, "it holds a token"
    assert whoami(kubeconfig) == SA + service
    assert whoami(stack.kubeconfig(cluster)) == "kubernetes-admin"


REFUSALS = [
    ("issuer", MGMT, ["get", "secrets", "-n", "east"]),
    ("issuer", MGMT, ["delete", "issuedcertificates", "-n", "east", "x"]),
    ("agent", "east", ["get", "secrets", "-n", "kube-system"]),
    ("agent", "east", ["get", "secret", "-n", "meshtrust-system", "x"]),
    ("bouncer", "east", ["get", "secret", "-n", "istio-system", "cacerts"]),
    ("bouncer", "east", ["delete", "pods", "-n", "kube-system", "x"]),
]


@pytest.mark.parametrize(("service", "cluster", "args"), REFUSALS)
def test_the_api_server_refuses_a_service_outside_its_rules(
    stack: Stack, service: str, cluster: str, args: list[str]
) -> None:
    refused = kubectl(stack.service_kubeconfig(service, cluster), *args)
    assert refused.returncode != 0
    assert f'User "{SA}{service}" cannot' in refused.stderr
    allowed = kubectl(stack.kubeconfig(cluster), *args)  # the admin: allowed, maybe not found
    assert "forbidden" not in allowed.stderr.lower()


def test_the_tokens_and_the_certificate_outlive_a_restart_of_the_emulator(stack: Stack) -> None:
    kubeconfig = stack.service_kubeconfig("agent", "east")
    before = stack.process("kubeapi").pid
    stack.kill("kubeapi", signal.SIGTERM)  # it writes its state, as at any stop
    stack.start("kubeapi")
    assert stack.process("kubeapi").pid != before
    assert whoami(kubeconfig) == SA + "agent"
