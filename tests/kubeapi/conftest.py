"""Fixtures for the emulator's conformance suite: a fresh cluster per test, a
kubernetes-asyncio client bound to it, a raw aiohttp session, and kubectl as a subprocess."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.api_client import ApiClient

from devstack.kubeapi import KubeAPI

BIN = Path(sys.executable).parent
KUBECTL = BIN / "kubectl"


@pytest.fixture
async def api() -> AsyncIterator[KubeAPI]:
    async with KubeAPI(
        name="east", pod_ready_delay=0.05, pod_termination_delay=0.05, bookmark_interval=0.2
    ) as cluster:
        yield cluster


async def make_client(cluster: KubeAPI) -> ApiClient:
    cfg = client.Configuration()
    await config.load_kube_config_from_dict(cluster.kubeconfig_dict(), client_configuration=cfg)
    return ApiClient(cfg)


@pytest.fixture
async def k8s(api: KubeAPI) -> AsyncIterator[ApiClient]:
    ac = await make_client(api)
    async with ac:
        yield ac


@pytest.fixture
async def http(api: KubeAPI) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(base_url=api.url) as session:
        yield session


@dataclass
class Result:
    rc: int
    out: str
    err: str


@dataclass
class Kubectl:
    kubeconfig: Path
    cache: Path

    def argv(self, *args: str) -> list[str]:
        return [
            str(KUBECTL),
            "--kubeconfig",
            str(self.kubeconfig),
            "--cache-dir",
            str(self.cache),
            *args,
        ]

    async def __call__(
        self, *args: str, stdin: str | None = None, check: bool = True, within: float = 30
    ) -> Result:
        proc = await asyncio.create_subprocess_exec(
            *self.argv(*args),
            stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={**os.environ, "HOME": str(self.cache)},
        )
        out, err = await asyncio.wait_for(
            proc.communicate(stdin.encode() if stdin is not None else None), within
        )
        res = Result(proc.returncode or 0, out.decode(), err.decode())
        if check and res.rc != 0:
            raise AssertionError(
                f"kubectl {' '.join(args)} failed ({res.rc}):\n{res.out}\n{res.err}"
            )
        return res

    async def json(self, *args: str) -> Any:
        return json.loads((await self(*args, "-o", "json")).out)


@pytest.fixture
def kubectl(api: KubeAPI, tmp_path: Path) -> Kubectl:
    return Kubectl(api.write_kubeconfig(tmp_path / "kubeconfig"), tmp_path / "kube-cache")


async def eventually(
    check: Callable[[], Awaitable[Any]], *, within: float = 5.0, interval: float = 0.02
) -> Any:
    """Poll `check` until it returns a truthy value (returned) or the deadline passes."""
    deadline = time.monotonic() + within
    last: Any = None
    while True:
        try:
            last = await check()
            if last:
                return last
        except AssertionError:
            if time.monotonic() >= deadline:
                raise
        if time.monotonic() >= deadline:
            raise AssertionError(f"condition not met within {within}s (last value: {last!r})")
        await asyncio.sleep(interval)


WIDGET_CRD: dict[str, Any] = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "widgets.example.com"},
    "spec": {
        "group": "example.com",
        "scope": "Namespaced",
        "names": {
            "plural": "widgets",
            "singular": "widget",
            "kind": "Widget",
            "shortNames": ["wd"],
            "categories": ["all"],
        },
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "subresources": {"status": {}},
                "selectableFields": [{"jsonPath": ".spec.color"}],
                "additionalPrinterColumns": [
                    {"name": "Size", "type": "integer", "jsonPath": ".spec.size"},
                    {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
                    {
                        "name": "Ready",
                        "type": "string",
                        "jsonPath": '.status.conditions[?(@.type=="Ready")].status',
                    },
                    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
                ],
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "spec": {
                                "type": "object",
                                "required": ["size"],
                                "properties": {
                                    "size": {"type": "integer", "minimum": 1, "maximum": 10},
                                    "color": {
                                        "type": "string",
                                        "enum": ["blue", "red"],
                                        "default": "blue",
                                    },
                                    "name": {"type": "string", "pattern": "^[a-z]+$"},
                                    "tags": {
                                        "type": "array",
                                        "maxItems": 2,
                                        "items": {"type": "string"},
                                    },
                                    "port": {"x-kubernetes-int-or-string": True},
                                    "extra": {
                                        "type": "object",
                                        "x-kubernetes-preserve-unknown-fields": True,
                                    },
                                },
                            },
                            "status": {
                                "type": "object",
                                "properties": {
                                    "phase": {"type": "string"},
                                    "conditions": {
                                        "type": "array",
                                        "items": {
                                            "type": "object",
                                            "properties": {
                                                "type": {"type": "string"},
                                                "status": {"type": "string"},
                                            },
                                        },
                                    },
                                },
                            },
                        },
                    }
                },
            },
            {
                "name": "v1beta1",
                "served": True,
                "storage": False,
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "x-kubernetes-preserve-unknown-fields": True,
                    }
                },
            },
        ],
    },
}


def widget(obj_name: str, size: int = 3, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "example.com/v1",
        "kind": "Widget",
        "metadata": {"name": obj_name},
        "spec": {"size": size, **spec},
    }


@pytest.fixture
async def widgets(k8s: ApiClient) -> client.CustomObjectsApi:
    """The Widget CRD installed; returns a CustomObjectsApi."""
    ext = client.ApiextensionsV1Api(k8s)
    await ext.create_custom_resource_definition(WIDGET_CRD)
    return client.CustomObjectsApi(k8s)


def deployment(name: str, replicas: int = 2, **annotations: str) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {
                    "labels": {"app": name, "tier": "web"},
                    "annotations": dict(annotations),
                },
                "spec": {"containers": [{"name": "main", "image": "nginx:1.27"}]},
            },
        },
    }
