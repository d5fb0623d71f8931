"""Bearer tokens and TLS: the written kubeconfig carries what a client needs."""

from __future__ import annotations

import json
import ssl

import aiohttp
import pytest
import yaml
from kubernetes_asyncio import client

from devstack.kubeapi import KubeAPI

from .conftest import Kubectl, make_client


async def test_token_is_required_and_the_kubeconfig_carries_it(tmp_path) -> None:
    async with KubeAPI(name="secure", token="s3cret") as api:
        async with aiohttp.ClientSession() as s:
            async with s.get(f"{api.url}/api/v1/namespaces") as resp:
                assert resp.status == 401
                assert (await resp.json())["reason"] == "Unauthorized"
            async with s.get(
                f"{api.url}/api/v1/namespaces", headers={"Authorization": "Bearer wrong"}
            ) as resp:
                assert resp.status == 401
            async with s.get(f"{api.url}/version") as resp:
                assert resp.status == 200  # public info, as system:public-info-viewer allows
        async with await make_client(api) as k8s:
            assert (await client.CoreV1Api(k8s).list_namespace()).items
        # (kubectl never sends a bearer token over plain http: see test_tls_with_a_generated_ca)


async def kubectl_names(kc: Kubectl) -> str:
    return (await kc("get", "ns", "-o", "name")).out


async def test_tls_with_a_generated_ca(tmp_path) -> None:
    async with KubeAPI(name="tls", tls=True, token="t") as api:
        assert api.url.startswith("https://")
        cfg = api.kubeconfig_dict()
        assert cfg["clusters"][0]["cluster"]["certificate-authority-data"]
        assert cfg["current-context"] == "tls"
        assert cfg["users"][0]["user"]["token"] == "t"
        async with await make_client(api) as k8s:
            assert (
                await client.CoreV1Api(k8s).read_namespace("default")
            ).metadata.name == "default"
        ctx = ssl.create_default_context(cadata=api.ca_pem.decode())
        async with aiohttp.ClientSession() as s:
            async with s.get(
                f"{api.url}/api", ssl=ctx, headers={"Authorization": "Bearer t"}
            ) as resp:
                assert resp.status == 200
            with pytest.raises(aiohttp.ClientConnectorCertificateError):
                await s.get(f"{api.url}/version")  # the system trust store does not know our CA
        path = api.write_kubeconfig(tmp_path / "kc")
        assert yaml.safe_load(path.read_text()) == cfg
        assert oct(path.stat().st_mode & 0o777) == "0o600"
        kc = Kubectl(path, tmp_path / "cache")
        assert "namespace/default" in await kubectl_names(kc)


async def test_kubeconfig_names_cluster_user_and_context_after_the_cluster(api: KubeAPI) -> None:
    cfg = api.kubeconfig_dict()
    assert [c["name"] for c in cfg["clusters"]] == ["east"]
    assert [u["name"] for u in cfg["users"]] == ["east"]
    assert cfg["contexts"] == [
        {"name": "east", "context": {"cluster": "east", "user": "east", "namespace": "default"}}
    ]
    assert cfg["clusters"][0]["cluster"]["server"] == api.url
    assert json.loads(json.dumps(cfg)) == cfg
