"""The production image's processes as single containers, started from Python (testcontainers).

nats-server (with docker-compose's generated configuration), one emulated cluster and the
issuer, each in its own container of meshtrust:0.1.0 as the Deployments run it: uid 10001, a
read-only root filesystem (only a tmpfs for JetStream's store), no capabilities, host networking
on 127.0.0.1. `meshtrust-issuer provision` must provision the bus as the provisioner and exit 0;
then the issuer, whose own NATS identity may not create streams, must become ready on it and
stop cleanly on SIGTERM without an init process (the Dockerfile's promise).
"""

from __future__ import annotations

import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from containers.containerkit import RUNTIME_IMAGE, loopback_ports, wait_for
from testcontainers.core.container import DockerContainer

from devstack.natsconfig import user_names
from devstack.stack import REPO
from shared.bus import Bus, NatsSettings

pytestmark = pytest.mark.containers

KUBECTL = Path(sys.executable).parent / "kubectl"
PASSWORDS = {user: f"tc-{user}" for user in user_names(("east", "west"))}


def restricted(container: DockerContainer) -> DockerContainer:
    """The Deployments' securityContext, and the host's network (loopback only)."""
    return container.with_kwargs(
        network_mode="host",
        read_only=True,
        cap_drop=["ALL"],
        security_opt=["no-new-privileges"],
    )


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as answer:  # noqa: S310 (loopback)
            return bool(answer.status == 200)
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


@pytest.fixture
def ports() -> dict[str, int]:
    return dict(
        zip(("nats", "monitor", "kube", "health"), loopback_ports(4, start=25000), strict=True)
    )


@pytest.fixture
def nats(ports: dict[str, int]) -> Iterator[DockerContainer]:
    container = restricted(
        DockerContainer(RUNTIME_IMAGE)
        .with_command(
            f"nats-server -c /etc/nats/nats.conf --addr 127.0.0.1 --port {ports['nats']}"
            f" --http_port {ports['monitor']}"
        )
        .with_volume_mapping(str(REPO / "deploy" / "nats" / "compose.conf"), "/etc/nats/nats.conf")
        .with_envs(**{f"PASSWORD_{u.upper().replace('-', '_')}": p for u, p in PASSWORDS.items()})
        .with_tmpfs_mount("/data")  # JetStream's store: the one writable path
    )
    with container:
        url = f"http://127.0.0.1:{ports['monitor']}/healthz?js-enabled-only=true"
        wait_for(lambda: answers(url), within=30, what="nats-server healthy")
        yield container


@pytest.fixture
def mgmt(ports: dict[str, int], tmp_path: Path) -> Iterator[Path]:
    """One emulated cluster with the CRDs; returns its kubeconfig (written by the container)."""
    kube = tmp_path / "kube"
    kube.mkdir()
    kube.chmod(0o777)  # written by uid 10001
    container = restricted(
        DockerContainer(RUNTIME_IMAGE)
        .with_command(
            f"meshtrust-kubeapi --listen 127.0.0.1:{ports['kube']}"
            " --kubeconfig /kube/mgmt.kubeconfig --name mgmt"
        )
        .with_volume_mapping(str(kube), "/kube", mode="rw")
    )
    kubeconfig = kube / "mgmt.kubeconfig"
    with container:
        url = f"http://127.0.0.1:{ports['kube']}/version"
        wait_for(lambda: answers(url) and kubeconfig.exists(), within=30, what="kubeapi serving")
        for path in ("deploy/crds", "deploy/management/00-namespace.yaml"):
            subprocess.run(
                [str(KUBECTL), "--kubeconfig", str(kubeconfig), "apply", "-f", str(REPO / path)],
                check=True, capture_output=True, timeout=60,
            )  # fmt: skip
        yield kubeconfig


async def test_the_provisioner_then_the_issuer_run_read_only_and_stop_on_sigterm(
    ports: dict[str, int], nats: DockerContainer, mgmt: Path
) -> None:
    provision = restricted(
        DockerContainer(RUNTIME_IMAGE)
        .with_command("meshtrust-issuer provision")
        .with_envs(
            MESHTRUST_NATS_URLS=f"nats://127.0.0.1:{ports['nats']}",
            MESHTRUST_NATS_USER="provisioner",
            MESHTRUST_NATS_PASSWORD=PASSWORDS["provisioner"],
            MESHTRUST_ISSUER_CLUSTERS="east,west",
        )
    )
    with provision:
        wrapped = provision.get_wrapped_container()
        status = wrapped.wait(timeout=60)["StatusCode"]
        out, err = provision.get_logs()
        assert status == 0, (out + err).decode()[-3000:]
    issuer = restricted(
        DockerContainer(RUNTIME_IMAGE)
        .with_command("meshtrust-issuer")
        .with_volume_mapping(str(mgmt.parent), "/kube")
        .with_envs(
            MESHTRUST_NATS_URLS=f"nats://127.0.0.1:{ports['nats']}",
            MESHTRUST_NATS_USER="issuer",
            MESHTRUST_NATS_PASSWORD=PASSWORDS["issuer"],
            MESHTRUST_NATS_PROVISION="false",
            MESHTRUST_ISSUER_CLUSTERS="east,west",
            MESHTRUST_KUBE_KUBECONFIG="/kube/mgmt.kubeconfig",
            MESHTRUST_HEALTH_HOST="127.0.0.1",
            MESHTRUST_HEALTH_PORT=str(ports["health"]),
            MESHTRUST_ISSUER_INSTANCE="issuer-tc",
        )
    )
    with issuer:
        ready = f"http://127.0.0.1:{ports['health']}/readyz"
        try:
            wait_for(lambda: answers(ready), within=60, what="the issuer ready")
        except AssertionError:
            out, err = issuer.get_logs()
            raise AssertionError((out + err).decode()[-3000:]) from None
        wrapped = issuer.get_wrapped_container()
        wrapped.reload()
        assert wrapped.attrs["HostConfig"]["ReadonlyRootfs"] is True
        assert wrapped.attrs["Config"]["User"] == "10001:10001"

        # What the provisioner made, and the issuer's own durables, seen as the issuer.
        settings = NatsSettings(
            urls=(f"nats://127.0.0.1:{ports['nats']}",),
            user="issuer",
            password=PASSWORDS["issuer"],
            provision=False,
            connect_deadline=10.0,
        )
        async with Bus.connect(settings) as bus:
            js = bus.connection.js
            assert (await js.stream_info("MESHTRUST")).config.name == "MESHTRUST"
            assert (await js.stream_info("MESHTRUST_LEDGER")).config.deny_delete is True
            assert (await js.stream_info("KV_meshtrust-desired")).config.name
            assert (await js.consumer_info("MESHTRUST", "agent-east")).name == "agent-east"
            assert (await js.consumer_info("MESHTRUST", "csr-east")).name == "csr-east"

        # SIGTERM (docker stop) ends it cleanly within the grace period: exit 0, no SIGKILL.
        wrapped.stop(timeout=30)
        assert wrapped.wait(timeout=30)["StatusCode"] == 0
        wrapped.reload()
        assert wrapped.attrs["State"]["OOMKilled"] is False
