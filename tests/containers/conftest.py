"""tests/containers: the image, the compose stack and testcontainers, against a real Docker.

Selected only by `make test-containers` (`-m containers`, after building the images;
tests/containers/harness.sh); plain `make test` deselects them (pyproject.toml's addopts). Every
container runs with host networking and listens on 127.0.0.1 only.
"""

from __future__ import annotations

import os

import pytest
from containers.containerkit import docker_available

# testcontainers' reaper (Ryuk) is an image from a registry, which machines like CI's cannot
# reach; every fixture here removes what it started instead.
os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")


@pytest.fixture(scope="session", autouse=True)
def _docker_and_images() -> None:
    """Fails (never skips) when Docker or the images are missing: where these tests are
    selected, they are meant to run."""
    docker_available()
