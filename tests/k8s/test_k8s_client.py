"""KubeClient against the emulated API server: configuration, verbs, and error mapping."""

from __future__ import annotations

import socket
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from devstack.kubeapi import KubeAPI
from k8s.harness import config_map, issued_certificate
from shared.api.v1alpha2 import IssuedCertificate, State
from shared.k8s.client import ClientSettings, KubeClient
from shared.k8s.errors import (
    AlreadyExists,
    Conflict,
    Forbidden,
    Gone,
    Invalid,
    KubeError,
    NotFound,
    Transient,
)
from shared.k8s.resources import CONFIG_MAPS, ISSUED_CERTIFICATES, NAMESPACES

pytestmark = pytest.mark.usefixtures("crds")


async def test_a_client_from_a_kubeconfig_file_and_context_reaches_the_server(
    kubeapi: Any, tmp_path: Path
) -> None:
    path = tmp_path / "kubeconfig"
    kubeapi.write_kubeconfig(path)
    context = yaml.safe_load(path.read_text())["contexts"][0]["name"]
    async with KubeClient.from_kubeconfig(path, context=context) as client:
        namespaces = await client.list(NAMESPACES)
    assert "default" in {ns["metadata"]["name"] for ns in namespaces.items}
    assert namespaces.resource_version


async def test_an_unknown_context_fails_on_entry_with_our_error(
    kubeapi: Any, tmp_path: Path
) -> None:
    path = tmp_path / "kubeconfig"
    kubeapi.write_kubeconfig(path)
    with pytest.raises(KubeError, match="cannot load Kubernetes configuration"):
        async with KubeClient.from_kubeconfig(path, context="no-such-context"):
            pass


async def test_a_refused_connection_is_transient() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": f"http://127.0.0.1:{port}"}}],
        "users": [{"name": "u", "user": {}}],
        "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "x",
    }
    async with KubeClient.from_kubeconfig_dict(config) as client:
        with pytest.raises(Transient):
            await client.list(NAMESPACES)


async def test_create_get_replace_patch_delete_round_trip(kube: KubeClient, namespace: str) -> None:
    created = await kube.create(CONFIG_MAPS, config_map("cm", namespace, a="1"))
    assert created["metadata"]["uid"]
    got = await kube.get(CONFIG_MAPS, "cm", namespace=namespace)
    assert got["data"] == {"a": "1"}

    got["data"]["b"] = "2"
    replaced = await kube.replace(CONFIG_MAPS, got)
    assert replaced["data"] == {"a": "1", "b": "2"}
    assert replaced["metadata"]["resourceVersion"] != got["metadata"]["resourceVersion"]

    patched = await kube.patch_merge(
        CONFIG_MAPS, "cm", {"data": {"a": None, "c": "3"}}, namespace=namespace
    )
    assert patched["data"] == {"b": "2", "c": "3"}, "a merge patch's null deletes the key"

    await kube.delete(CONFIG_MAPS, "cm", namespace=namespace)
    with pytest.raises(NotFound):
        await kube.get(CONFIG_MAPS, "cm", namespace=namespace)


async def test_creating_twice_is_already_exists(kube: KubeClient, namespace: str) -> None:
    await kube.create(CONFIG_MAPS, config_map("cm", namespace))
    with pytest.raises(AlreadyExists):
        await kube.create(CONFIG_MAPS, config_map("cm", namespace))


async def test_a_write_with_a_stale_resource_version_is_a_conflict(
    kube: KubeClient, namespace: str
) -> None:
    stale = await kube.create(CONFIG_MAPS, config_map("cm", namespace, a="1"))
    await kube.replace(CONFIG_MAPS, {**stale, "data": {"a": "2"}})
    with pytest.raises(Conflict):
        await kube.replace(CONFIG_MAPS, {**stale, "data": {"a": "3"}})
    with pytest.raises(Conflict):
        await kube.delete(
            CONFIG_MAPS,
            "cm",
            namespace=namespace,
            precondition_resource_version=stale["metadata"]["resourceVersion"],
        )


async def test_deleting_a_missing_object_is_not_found(kube: KubeClient, namespace: str) -> None:
    with pytest.raises(NotFound):
        await kube.delete(CONFIG_MAPS, "nothing", namespace=namespace)


async def test_an_invalid_custom_resource_is_refused_with_field_paths(
    kube: KubeClient, namespace: str
) -> None:
    body = issued_certificate("bad", namespace, hosts=[])
    body["spec"]["certOptions"] = {"keyAlgorithm": "DSA"}
    with pytest.raises(Invalid) as caught:
        await kube.create(ISSUED_CERTIFICATES, body)
    assert "spec.hosts" in caught.value.fields
    assert "spec.certOptions.keyAlgorithm" in caught.value.fields


async def test_merge_patches_of_custom_resources_are_accepted(
    kube: KubeClient, namespace: str
) -> None:
    """A CRD answers 415 to strategic merge and refuses a dict sent as JSON patch: only a real
    merge patch works."""
    await kube.create(ISSUED_CERTIFICATES, issued_certificate("ic", namespace))
    patched = await kube.patch_merge(
        ISSUED_CERTIFICATES,
        "ic",
        {"spec": {"org": "acme", "certOptions": {"ttl": "90s"}}},
        namespace=namespace,
    )
    assert patched["spec"]["org"] == "acme"
    assert patched["spec"]["certOptions"]["ttl"] == "90s"
    assert patched["spec"]["certOptions"]["ttlDays"] == 365, "the CRD's defaults were applied"
    assert patched["metadata"]["generation"] == 2


async def test_status_goes_only_through_the_status_subresource(
    kube: KubeClient, namespace: str
) -> None:
    body = issued_certificate("ic", namespace)
    body["status"] = {"state": "FINISHED"}
    created = await kube.create(ISSUED_CERTIFICATES, body)
    assert "state" not in (created.get("status") or {}), "status is dropped on create"

    after = await kube.patch_status(
        ISSUED_CERTIFICATES,
        "ic",
        {"status": {"state": "REQUESTED", "observedGeneration": 1}},
        namespace=namespace,
    )
    assert after["status"]["state"] == "REQUESTED"
    assert after["metadata"]["generation"] == created["metadata"]["generation"], "no bump"

    ignored = await kube.patch_merge(
        ISSUED_CERTIFICATES, "ic", {"status": {"state": "FAILED"}}, namespace=namespace
    )
    assert ignored["status"]["state"] == "REQUESTED", "status sent to the main endpoint is ignored"


async def test_a_conditional_status_patch_with_a_stale_version_is_a_conflict(
    kube: KubeClient, namespace: str
) -> None:
    created = await kube.create(ISSUED_CERTIFICATES, issued_certificate("ic", namespace))
    await kube.patch_status(
        ISSUED_CERTIFICATES, "ic", {"status": {"error": "one"}}, namespace=namespace
    )
    with pytest.raises(Conflict):
        await kube.patch_status(
            ISSUED_CERTIFICATES,
            "ic",
            {
                "metadata": {"resourceVersion": created["metadata"]["resourceVersion"]},
                "status": {"error": "two"},
            },
            namespace=namespace,
        )


@pytest.mark.parametrize(
    ("status", "retry_after"),
    [
        pytest.param(500, None, id="a 500 is transient"),
        pytest.param(503, 2, id="a 503 is transient and carries its Retry-After"),
        pytest.param(429, 3, id="a 429 is transient and carries its Retry-After"),
    ],
)
async def test_server_trouble_is_transient(
    kube: KubeClient, kubeapi: Any, namespace: str, status: int, retry_after: int | None
) -> None:
    kubeapi.faults.fail_next(1, status=status, path_contains="/configmaps", retry_after=retry_after)
    with pytest.raises(Transient) as caught:
        await kube.list(CONFIG_MAPS, namespace=namespace)
    assert caught.value.code == status
    assert caught.value.retry_after == retry_after
    await kube.list(CONFIG_MAPS, namespace=namespace)  # the fault was used up


async def test_lists_page_with_continue_tokens(kube: KubeClient, namespace: str) -> None:
    for i in range(7):
        await kube.create(CONFIG_MAPS, config_map(f"cm-{i}", namespace))
    names: list[str] = []
    token: str | None = None
    pages = 0
    while True:
        page = await kube.list(CONFIG_MAPS, namespace=namespace, limit=3, continue_token=token)
        pages += 1
        names += [item["metadata"]["name"] for item in page.items]
        assert all(item["kind"] == "ConfigMap" for item in page.items)
        if not (token := page.continue_token):
            break
    assert pages == 3
    assert sorted(names) == [f"cm-{i}" for i in range(7)]


async def test_label_selectors_filter_lists(kube: KubeClient, namespace: str) -> None:
    await kube.create(CONFIG_MAPS, config_map("a", namespace, labels={"app": "x"}))
    await kube.create(CONFIG_MAPS, config_map("b", namespace, labels={"app": "y"}))
    page = await kube.list(CONFIG_MAPS, namespace=namespace, label_selector={"app": "x"})
    assert [item["metadata"]["name"] for item in page.items] == ["a"]


async def test_a_watch_replays_what_happened_after_its_resource_version(
    kube: KubeClient, namespace: str
) -> None:
    start = (await kube.list(CONFIG_MAPS, namespace=namespace)).resource_version
    await kube.create(CONFIG_MAPS, config_map("cm", namespace, a="1"))
    await kube.patch_merge(CONFIG_MAPS, "cm", {"data": {"a": "2"}}, namespace=namespace)
    await kube.delete(CONFIG_MAPS, "cm", namespace=namespace)
    seen: list[tuple[str, str]] = []
    async with kube.watch(
        CONFIG_MAPS, namespace=namespace, resource_version=start, timeout_seconds=5
    ) as events:
        async for event in events:
            if event.type != "BOOKMARK":
                seen.append((event.type, event.object["metadata"]["name"]))
            if len(seen) == 3:
                break
    assert seen == [("ADDED", "cm"), ("MODIFIED", "cm"), ("DELETED", "cm")]


async def test_a_watch_from_a_compacted_resource_version_is_gone(
    kube: KubeClient, kubeapi: Any, namespace: str
) -> None:
    old = (await kube.list(CONFIG_MAPS, namespace=namespace)).resource_version
    await kube.create(CONFIG_MAPS, config_map("cm", namespace))
    kubeapi.faults.compact()

    async def read_all() -> None:
        async with kube.watch(
            CONFIG_MAPS, namespace=namespace, resource_version=old, timeout_seconds=5
        ) as events:
            async for _ in events:
                pass

    with pytest.raises(Gone):
        await read_all()


async def test_custom_resources_read_and_write_as_models(kube: KubeClient, namespace: str) -> None:
    model = IssuedCertificate.from_object(
        issued_certificate("ic", namespace, certOptions={"keyAlgorithm": "ECDSA"})
    )
    created = await kube.create_model(model)
    assert created.metadata.uid
    assert created.spec.cert_options.key_size == 256
    again = await kube.get_model(IssuedCertificate, "ic", namespace=namespace)
    assert again.status.state is State.PENDING
    listed = await kube.list_models(IssuedCertificate, namespace=namespace)
    assert [ic.metadata.name for ic in listed] == ["ic"]


async def test_an_in_cluster_client_uses_the_service_account_token_and_ca(tmp_path: Path) -> None:
    async with KubeAPI(name="secure", tls=True, token="s3cret-token") as api:
        assert api.ca_pem is not None
        (tmp_path / "token").write_text("s3cret-token")
        (tmp_path / "ca.crt").write_bytes(api.ca_pem)
        host, port = api.url.removeprefix("https://").rsplit(":", 1)
        environ = {"KUBERNETES_SERVICE_HOST": host, "KUBERNETES_SERVICE_PORT": port}
        async with KubeClient.in_cluster(
            token_path=tmp_path / "token", ca_path=tmp_path / "ca.crt", environ=environ
        ) as client:
            assert client.host.startswith("https://")
            await client.list(NAMESPACES)

        (tmp_path / "token").write_text("wrong-token")
        async with KubeClient.in_cluster(
            token_path=tmp_path / "token", ca_path=tmp_path / "ca.crt", environ=environ
        ) as client:
            with pytest.raises(Forbidden) as caught:
                await client.list(NAMESPACES)
        assert caught.value.code == 401


async def test_in_cluster_outside_a_cluster_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(KubeError, match="in-cluster"):
        async with KubeClient.in_cluster(token_path=tmp_path / "none", environ={}):
            pass


async def test_a_request_that_outlives_its_timeout_is_transient(kubeapi: Any) -> None:
    settings = ClientSettings(request_timeout_seconds=0.2)
    async with KubeClient.from_kubeconfig_dict(
        kubeapi.kubeconfig_dict(), settings=settings
    ) as client:
        kubeapi.faults.set_latency(2.0)
        with pytest.raises(Transient, match="GET"):
            await client.list(NAMESPACES)
        kubeapi.faults.clear()
        await client.list(NAMESPACES)


EXEC_PLUGIN = """
import json, pathlib, sys
runs = pathlib.Path(sys.argv[1])
runs.write_text(str(int(runs.read_text() or 0) + 1) if runs.exists() else "1")
print(json.dumps({
    "apiVersion": "client.authentication.k8s.io/v1beta1",
    "kind": "ExecCredential",
    "status": {"token": "plugin-token", "expirationTimestamp": sys.argv[2]},
}))
"""


@pytest.mark.parametrize(
    ("expiry", "runs_after_three_requests"),
    [
        pytest.param("2000-01-01T00:00:00Z", 4, id="an expired exec credential is fetched again"),
        pytest.param("2999-01-01T00:00:00Z", 1, id="a fresh exec credential is reused"),
    ],
)
async def test_exec_plugin_credentials_are_refreshed_when_they_expire(
    tmp_path: Path, expiry: str, runs_after_three_requests: int
) -> None:
    plugin, runs = tmp_path / "plugin.py", tmp_path / "runs"
    plugin.write_text(EXEC_PLUGIN)
    async with KubeAPI(name="exec", token="plugin-token") as api:
        config = api.kubeconfig_dict()
        for user in config["users"]:
            user["user"] = {
                "exec": {
                    "apiVersion": "client.authentication.k8s.io/v1beta1",
                    "command": sys.executable,
                    "args": [str(plugin), str(runs), expiry],
                    "interactiveMode": "Never",
                }
            }
        async with KubeClient.from_kubeconfig_dict(config) as client:
            for _ in range(3):
                await client.list(NAMESPACES)
    assert int(runs.read_text()) == runs_after_three_requests
