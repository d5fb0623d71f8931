"""The images built by make test-containers run as the Deployments expect them to.

meshtrust:0.1.0 is the Dockerfile's default target (what `docker build .` gives a user, and what
deploy/ names); meshtrust:dev is the devtools target of docker-compose.yml. Every container runs
as the deploy/ manifests run it: uid/gid 10001, read-only root filesystem, no capabilities.
"""

from __future__ import annotations

import json

import pytest
from containers.containerkit import IMAGE, RUNTIME_IMAGE, DockerError, docker, inspect

pytestmark = pytest.mark.containers

# The Deployments' securityContext (deploy/management, deploy/remote), as `docker run` flags.
RESTRICTED = ["--read-only", "--cap-drop", "ALL", "--security-opt", "no-new-privileges"]


def run_in(image: str, *command: str) -> str:
    return docker("run", "--rm", "--network", "host", *RESTRICTED, image, *command, timeout=120)


@pytest.mark.parametrize(
    ("program", "says"),
    [
        ("meshtrust-issuer", "MESHTRUST_ISSUER_MAX_TTL"),
        ("meshtrust-bouncer", "MESHTRUST_BOUNCER_CLUSTER"),
        ("meshtrust-agent", "MESHTRUST_AGENT_TRUST_BUNDLE"),
        ("meshtrust", "demo"),
        ("meshtrust-kubeapi", "--cluster"),
    ],
)
def test_every_program_answers_help_as_uid_10001_on_a_read_only_root(
    program: str, says: str
) -> None:
    out = run_in(RUNTIME_IMAGE, program, "--help")
    assert says in out


def test_a_service_refuses_arguments_instead_of_ignoring_them() -> None:
    with pytest.raises(DockerError, match=r"exited 2[\s\S]*takes no arguments, got --cluster"):
        run_in(RUNTIME_IMAGE, "meshtrust-issuer", "--cluster", "east")


def test_nats_server_and_kubectl_are_where_compose_needs_them() -> None:
    assert run_in(RUNTIME_IMAGE, "nats-server", "--version").startswith("nats-server: v2.")
    assert "Client Version: v1." in run_in(IMAGE, "kubectl", "version", "--client")


@pytest.mark.parametrize("image", [RUNTIME_IMAGE, IMAGE])
def test_the_image_runs_as_10001_without_a_writable_root_and_without_dev_tools(
    image: str,
) -> None:
    assert run_in(image, "id", "-u").strip() == "10001"
    assert run_in(image, "id", "-g").strip() == "10001"
    config = inspect(image)["Config"]
    assert config["User"] == "10001:10001"
    assert config["Cmd"] == ["meshtrust", "--help"]
    assert not config.get("Entrypoint")
    # A read-only root: nothing outside a mounted volume or tmpfs can be written, and Python
    # does not try (no .pyc written next to the code).
    with pytest.raises(DockerError, match="Read-only file system"):
        run_in(image, "sh", "-c", "touch /opt/meshtrust/x")
    assert run_in(image, "sh", "-c", "echo $PYTHONDONTWRITEBYTECODE").strip() == "1"
    # Runtime dependencies only: no pytest, ruff or mypy in the image.
    installed = json.loads(run_in(image, "python", "-m", "pip", "list", "--format", "json"))
    names = {package["name"].lower().replace("_", "-") for package in installed}
    assert {"meshtrust", "nats-py", "kubernetes-asyncio", "cryptography"} <= names
    assert not names & {"pytest", "ruff", "mypy", "hypothesis", "testcontainers"}


def test_the_production_image_has_no_kubectl_and_the_dev_image_owns_its_volume_paths() -> None:
    assert run_in(RUNTIME_IMAGE, "sh", "-c", "command -v kubectl || echo none").strip() == "none"
    owners = run_in(IMAGE, "stat", "-c", "%u:%g %n", "/data", "/kube").splitlines()
    assert owners == ["10001:10001 /data", "10001:10001 /kube"]
