"""What the container tests share: Docker from the command line, loopback ports, the compose stack.

`ComposeStack` runs the user's `docker-compose.yml` with `docker-compose` (Debian's 1.29, or
whatever `docker-compose` is on PATH) merged with `compose.host.yml` (host networking, loopback
ports). It also answers the part of `devstack.stack.Stack`'s interface that the end-to-end
helpers (`tests/e2e/e2e_testing.py`) use: `remotes`, `kubeconfig(cluster)`, `info.nats_url`,
`nats_settings(user)`, `kubectl(...)`, so that the compose stack is checked by the same code as the
demo's.

The one change to the user's file: nats' `ports:` mapping is dropped (written to a copy), since
docker-compose refuses published ports on a host-network service and compose merges, never
removes, list entries of an override. Everything else is read from the user's file as it is.

Waiting is always a poll of a condition with a deadline (`docker inspect`), never a sleep.
Deliberately not here: building images (tests/containers/harness.sh does, before pytest).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import SecretStr

from devstack.natsconfig import inbox_prefix, user_names
from devstack.stack import MGMT, REPO
from shared.bus import NatsSettings

HERE = Path(__file__).resolve().parent
IMAGE = os.environ.get("MESHTRUST_TEST_IMAGE", "meshtrust:dev")
RUNTIME_IMAGE = os.environ.get("MESHTRUST_TEST_RUNTIME_IMAGE", "meshtrust:0.1.0")
REMOTES = ["east", "west"]
SERVICES = ["nats", "kubeapi", "issuer", "agent-east", "bouncer-east", "agent-west", "bouncer-west"]
"""The long-running services of docker-compose.yml (the seed runs once)."""

EPHEMERAL_LOW = 32768  # Linux's default ip_local_port_range starts here


class DockerError(AssertionError):
    """A docker or docker-compose command failed; the message holds its output."""


def run(*command: str, env: Mapping[str, str] | None = None, stdin: str | None = None,
        timeout: float = 300) -> str:  # fmt: skip
    """Run a command; its stdout, or DockerError with stdout and stderr."""
    result = subprocess.run(
        list(command),
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env={**os.environ, **(env or {})},
    )
    if result.returncode != 0:
        raise DockerError(
            f"{' '.join(command)} exited {result.returncode}\n{result.stdout}\n{result.stderr}"
        )
    return result.stdout


def docker(*args: str, stdin: str | None = None, timeout: float = 300) -> str:
    return run("docker", *args, stdin=stdin, timeout=timeout)


def inspect(container: str) -> dict[str, Any]:
    data: list[dict[str, Any]] = json.loads(docker("inspect", container))
    return data[0]


def wait_for(check: Any, *, within: float, what: str, interval: float = 0.2) -> Any:
    """Poll `check()` until it returns something truthy; AssertionError naming `what` and the
    last value after `within` seconds."""
    deadline = time.monotonic() + within
    last = None
    while True:
        last = check()
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {within:.0f}s (last: {last!r})")
        time.sleep(interval)


def loopback_ports(count: int, *, start: int = 24000) -> list[int]:
    """`count` ports free on 127.0.0.1 right now, below the ephemeral range (where every
    "bind port 0" of the other tests on this machine lands), each tried by binding it."""
    found: list[int] = []
    port = start + (os.getpid() % 50) * 100  # two runs at once rarely start at the same place
    while len(found) < count:
        if port >= EPHEMERAL_LOW:
            raise AssertionError(f"no {count} free loopback ports below {EPHEMERAL_LOW}")
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                pass
            else:
                found.append(port)
        port += 1
    return found


@dataclass(frozen=True)
class Info:
    nats_url: str


class ComposeStack:
    """docker-compose.yml, up with host networking on loopback, under a project of its own."""

    def __init__(self, workdir: Path, *, project: str = "meshtrust-ct") -> None:
        self.workdir = workdir
        self.root = workdir  # what e2e_testing's helpers call the stack's directory
        self.project = project
        self.remotes = list(REMOTES)
        names = [
            "NATS_PORT", "NATS_MONITOR_PORT", "MGMT_PORT", "EAST_PORT", "WEST_PORT",
            "ISSUER_HEALTH_PORT", "AGENT_EAST_HEALTH_PORT", "BOUNCER_EAST_HEALTH_PORT",
            "AGENT_WEST_HEALTH_PORT", "BOUNCER_WEST_HEALTH_PORT",
        ]  # fmt: skip
        self.ports = dict(zip(names, loopback_ports(len(names)), strict=True))
        # Passwords of this run through the compose variables (not the dev- defaults): proves
        # that the server and the services read them from the same place.
        self._passwords = {u: secrets.token_urlsafe(18) for u in user_names(self.remotes)}
        self.env = {f"MESHTRUST_CT_{k}": str(v) for k, v in self.ports.items()}
        self.env |= {
            f"PASSWORD_{u.upper().replace('-', '_')}": p for u, p in self._passwords.items()
        }
        self.info = Info(nats_url=f"nats://127.0.0.1:{self.ports['NATS_PORT']}")
        self.compose_file = workdir / "docker-compose.yml"
        self.compose_file.write_text(yaml.safe_dump(users_compose_without_published_ports()))

    # --- docker-compose ------------------------------------------------------------------

    def compose(self, *args: str, stdin: str | None = None, timeout: float = 300) -> str:
        return run(
            "docker-compose",
            "--project-name", self.project,
            "--project-directory", str(REPO),
            "--file", str(self.compose_file),
            "--file", str(HERE / "compose.host.yml"),
            *args,
            env=self.env, stdin=stdin, timeout=timeout,
        )  # fmt: skip

    def up(self, *, within: float = 240) -> None:
        """`up -d` (images as built, never a build) and wait until every service is healthy
        and the seed has exited 0; then fetch the kubeconfigs the emulator wrote."""
        self.compose("up", "--detach", "--no-build")
        self.wait_healthy(within=within)
        wait_for(self._seeded, within=within, what="the seed to exit 0")
        for cluster in [MGMT, *self.remotes]:
            text = docker("exec", self.container("kubeapi"), "cat", f"/kube/{cluster}.kubeconfig")
            self.kubeconfig(cluster).write_text(text)

    def down(self, *, volumes: bool = False) -> None:
        self.compose("down", *(["--volumes"] if volumes else []), timeout=180)

    def container(self, service: str) -> str:
        """The id of `service`'s container (created, running or exited)."""
        ids = self.compose("ps", "--all", "-q", service).split()
        assert len(ids) == 1, f"{service}: containers {ids}"
        return ids[0]

    def health(self) -> dict[str, str]:
        """service -> health status ("healthy", "starting", "unhealthy") or container state."""
        out = {}
        for service in SERVICES:
            state = inspect(self.container(service))["State"]
            out[service] = (state.get("Health") or {}).get("Status") or state["Status"]
        return out

    def wait_healthy(self, *, within: float) -> None:
        def all_healthy() -> bool:
            try:
                return set(self.health().values()) == {"healthy"}
            except (DockerError, AssertionError):
                return False  # a container not yet created

        try:
            wait_for(all_healthy, within=within, what="every service healthy", interval=0.5)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; now {self.health()}\n{self.logs()}") from None

    def _seeded(self) -> bool:
        state = inspect(self.container("seed"))["State"]
        if state["Status"] == "exited" and state["ExitCode"] != 0:
            raise AssertionError(f"the seed failed:\n{self.logs('seed')}")
        return bool(state["Status"] == "exited")

    def logs(self, *services: str, tail: int = 40) -> str:
        try:
            return self.compose("logs", "--no-color", "--tail", str(tail), *services)
        except DockerError as exc:
            return str(exc)

    # --- what e2e_testing's helpers use ------------------------------------------------------

    def kubeconfig(self, cluster: str) -> Path:
        return self.workdir / f"{cluster}.kubeconfig"

    def nats_settings(self, user: str, **overrides: object) -> NatsSettings:
        """Settings that connect as `user` (compose's stack authenticates by password)."""
        settings = NatsSettings(
            urls=(self.info.nats_url,),
            user=user,
            password=SecretStr(self._passwords[user]),
            inbox_prefix=inbox_prefix(user),
            provision=False,
        )
        return settings.model_copy(update=overrides)

    def kubectl(self, cluster: str, *args: str, stdin: str | None = None) -> str:
        """kubectl in the seed's image, as docs/deploy.md tells users to run it."""
        return self.compose(
            "run", "--rm", "--no-deps", "-T", "--entrypoint", "kubectl", "seed",
            "--kubeconfig", f"/kube/{cluster}.kubeconfig", *args,
            stdin=stdin,
        )  # fmt: skip


def users_compose_without_published_ports() -> dict[str, Any]:
    """docker-compose.yml as compose reads it, less nats' `ports:` (see the module docstring)."""
    data = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    ports = data["services"]["nats"].pop("ports")
    assert ports == ["127.0.0.1:4222:4222"], f"nats publishes {ports}: update this copy"
    assert not any("ports" in s for s in data["services"].values())
    return dict(data)


def docker_available() -> None:
    """Fail (not skip: these tests are selected only where Docker is meant to be) with what is
    missing: a daemon, docker-compose, the images."""
    for program in ("docker", "docker-compose"):
        assert shutil.which(program), f"{program} is not on PATH: run make test-containers"
    docker("info", "--format", "{{.ServerVersion}}")
    for image in (IMAGE, RUNTIME_IMAGE):
        docker("image", "inspect", "--format", "{{.Id}}", image)
