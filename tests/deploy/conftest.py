"""Fixtures of tests/deploy; the helpers are in deploykit.py and deploy_usage.py.

tests/deploy is not a package (its name would clash with the repository's deploy/), so this
directory is put on sys.path for its helper modules, whose names are unique.
"""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from deploykit import Kubectl

from devstack.kubeapi import KubeAPI


@pytest.fixture
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    """No MESHTRUST_* variable of the test runner leaks into settings read in a test."""
    for key in list(os.environ):
        if key.upper().startswith("MESHTRUST_"):
            monkeypatch.delenv(key)
    return monkeypatch


@dataclass
class Cluster:
    api: KubeAPI
    kubectl: Kubectl


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    """One emulated cluster and kubectl bound to it (its own discovery cache: ports recur)."""
    async with KubeAPI(name="deploy", pod_ready_delay=0.05, bookmark_interval=0.2) as api:
        kubeconfig = api.write_kubeconfig(tmp_path / "kubeconfig")
        yield Cluster(api, Kubectl(kubeconfig, tmp_path / "kube-cache"))
