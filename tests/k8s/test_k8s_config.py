"""Where services find their Kubernetes API: a kubeconfig from settings (env), else in-cluster."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from shared.k8s.config import KubeSettings, client_from_settings
from shared.k8s.errors import KubeError
from shared.k8s.resources import NAMESPACES

if TYPE_CHECKING:
    from devstack.kubeapi import KubeAPI


async def test_a_kubeconfig_named_in_the_environment_is_used(
    kubeapi: KubeAPI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = kubeapi.write_kubeconfig(tmp_path / "east.kubeconfig")
    monkeypatch.setenv("MESHTRUST_KUBE_KUBECONFIG", str(path))
    settings = KubeSettings()
    assert settings.kubeconfig == Path(path)
    async with client_from_settings(settings) as client:
        names = {ns["metadata"]["name"] for ns in (await client.list(NAMESPACES)).items}
    assert "default" in names


async def test_without_a_kubeconfig_the_in_cluster_configuration_is_used(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("MESHTRUST_KUBE_KUBECONFIG", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    settings = KubeSettings()
    assert settings.kubeconfig is None
    # Outside a pod the in-cluster configuration cannot load, and says so.
    with pytest.raises(KubeError, match="in-cluster"):
        async with client_from_settings(settings):
            pass


@pytest.mark.parametrize("trust_env", [False, True], ids=["proxy env ignored", "proxy env used"])
async def test_proxy_environment_is_used_only_when_asked(
    kubeapi: KubeAPI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, trust_env: bool
) -> None:
    # A proxy nobody listens on: a client that uses it cannot reach the API server.
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("NO_PROXY", "")
    monkeypatch.setenv("MESHTRUST_KUBE_KUBECONFIG", str(kubeapi.write_kubeconfig(tmp_path / "k")))
    monkeypatch.setenv("MESHTRUST_KUBE_TRUST_ENV", str(trust_env).lower())
    monkeypatch.setenv("MESHTRUST_KUBE_REQUEST_TIMEOUT", "3")
    async with client_from_settings(KubeSettings()) as client:
        if trust_env:
            with pytest.raises(KubeError):
                await client.list(NAMESPACES)
        else:
            assert (await client.list(NAMESPACES)).items
