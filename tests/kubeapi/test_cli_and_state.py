"""`meshtrust-kubeapi` as a separate process (single and multi-cluster), and --state."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

import aiohttp
import yaml
from kubernetes_asyncio import client

from devstack.kubeapi import KubeAPI
from devstack.kubeapi.__main__ import parse_args
from devstack.kubeapi.cluster import DEFAULT_POD_TERMINATION_DELAY

from .conftest import Kubectl, make_client

CLI = Path(sys.executable).parent / "meshtrust-kubeapi"


async def start(*args: str, lines: int = 1) -> tuple[asyncio.subprocess.Process, list[str]]:
    proc = await asyncio.create_subprocess_exec(
        str(CLI), *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    assert proc.stdout is not None
    out = [
        (await asyncio.wait_for(proc.stdout.readline(), 20)).decode().strip() for _ in range(lines)
    ]
    return proc, out


async def stop(proc: asyncio.subprocess.Process) -> int:
    proc.send_signal(signal.SIGTERM)
    await asyncio.wait_for(proc.communicate(), 20)
    return proc.returncode or 0


async def test_cli_serves_one_cluster_and_writes_a_working_kubeconfig(tmp_path: Path) -> None:
    kc = tmp_path / "east.kubeconfig"
    proc, (line,) = await start(
        "--listen", "127.0.0.1:0", "--kubeconfig", str(kc), "--name", "east"
    )
    try:
        url = line  # --listen prints just the URL
        assert url.startswith("http://127.0.0.1:")
        cfg = yaml.safe_load(kc.read_text())
        assert cfg["clusters"][0]["cluster"]["server"] == url
        assert cfg["current-context"] == "east"
        res = await Kubectl(kc, tmp_path / "cache")("get", "ns", "default", "-o", "name")
        assert res.out.strip() == "namespace/default"
        async with (
            aiohttp.ClientSession() as s,
            s.post(f"{url}/_emulator/faults/fail-next", json={"n": 1}) as resp,
        ):
            assert resp.status == 200
        failed = await Kubectl(kc, tmp_path / "cache")("get", "ns", "default", check=False)
        assert failed.rc != 0
        assert "injected fault" in failed.err
    finally:
        assert await stop(proc) == 0


async def test_cli_hosts_several_clusters_on_separate_ports(tmp_path: Path) -> None:
    args = [
        "--cluster",
        f"mgmt=127.0.0.1:0:{tmp_path / 'mgmt'}",
        "--cluster",
        f"east=127.0.0.1:0:{tmp_path / 'east'}",
    ]
    proc, lines = await start(*args, lines=2)
    try:
        urls = dict(line.split() for line in lines)
        assert set(urls) == {"mgmt", "east"}
        assert urls["mgmt"] != urls["east"]
        mgmt = Kubectl(tmp_path / "mgmt", tmp_path / "c1")
        east = Kubectl(tmp_path / "east", tmp_path / "c2")
        cm = yaml.safe_dump(
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "only-in-mgmt"}}
        )
        await mgmt("apply", "-f", "-", stdin=cm)
        assert (await mgmt("get", "cm", "-o", "name")).out.strip() == "configmap/only-in-mgmt"
        assert (await east("get", "cm", "-o", "name")).out.strip() == ""
    finally:
        assert await stop(proc) == 0


async def test_state_file_keeps_objects_and_resource_versions_across_restarts(
    tmp_path: Path,
) -> None:
    state = tmp_path / "state.json"
    async with KubeAPI(name="east", state_file=state) as api, await make_client(api) as k8s:
        ext = client.ApiextensionsV1Api(k8s)
        from .conftest import WIDGET_CRD, widget

        await ext.create_custom_resource_definition(WIDGET_CRD)
        co = client.CustomObjectsApi(k8s)
        w = await co.create_namespaced_custom_object(
            "example.com", "v1", "default", "widgets", widget("w")
        )
        last_rv = int((await client.CoreV1Api(k8s).list_namespace()).metadata.resource_version)
    assert state.exists()
    async with KubeAPI(name="east", state_file=state) as api, await make_client(api) as k8s:
        co = client.CustomObjectsApi(k8s)
        again = await co.get_namespaced_custom_object(
            "example.com", "v1", "default", "widgets", "w"
        )
        assert again["metadata"]["uid"] == w["metadata"]["uid"]
        cm = await client.CoreV1Api(k8s).create_namespaced_config_map(
            "default", {"metadata": {"name": "new"}}
        )
        assert int(cm.metadata.resource_version) > last_rv


async def test_cli_with_tls_token_and_state_survives_a_restart(tmp_path: Path) -> None:
    kc, state = tmp_path / "kc", tmp_path / "state.json"
    args = ["--listen", "127.0.0.1:0", "--kubeconfig", str(kc), "--tls", "--token", "t0k"]
    proc, (line,) = await start(*args, "--state", str(state))
    try:
        assert line.startswith("https://")
        kubectl = Kubectl(kc, tmp_path / "cache")
        cm = yaml.safe_dump({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "kept"}})
        await kubectl("apply", "-f", "-", stdin=cm)
    finally:
        assert await stop(proc) == 0
    proc, _ = await start(*args, "--state", str(state))
    try:
        got = await Kubectl(kc, tmp_path / "cache2").json("get", "cm", "kept")
        assert got["metadata"]["name"] == "kept"
    finally:
        assert await stop(proc) == 0


def test_pod_termination_delay_option_defaults_short_and_grace_waits_the_whole_period() -> None:
    base = ["--listen", "127.0.0.1:0", "--kubeconfig", "/dev/null"]
    assert parse_args(base)[0].pod_termination_delay == DEFAULT_POD_TERMINATION_DELAY == 0.5
    assert parse_args([*base, "--pod-termination-delay", "2"])[0].pod_termination_delay == 2.0
    assert parse_args([*base, "--pod-termination-delay", "grace"])[0].pod_termination_delay is None
