"""Built-in validation as kube-apiserver words it: 422 Invalid with `details.causes`, for what
core/v1 and apps/v1 refuse (Secret types, config keys, sizes, container names, restartPolicy,
replicas), and 413 for a body over the request size limit."""

from __future__ import annotations

import base64
import io
import json
from typing import Any

import aiohttp
import pytest
from kubernetes_asyncio import client
from kubernetes_asyncio.client.api_client import ApiClient

from .conftest import deployment

MIB = 1024 * 1024


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def secret(kind: str, **data: str) -> dict[str, Any]:
    return {"metadata": {"name": "s"}, "type": kind, "data": {k: b64(v) for k, v in data.items()}}


def pod(**spec: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "p"},
        "spec": {"containers": [{"name": "main", "image": "busybox:1.36"}], **spec},
    }


CONFIG_KEY = (
    "a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. "
    "'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is "
    "'[-._a-zA-Z0-9]+')"
)
LABEL = (
    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and "
    "must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used "
    "for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
)
TOO_LONG = "Too long: may not be more than 1048576 bytes"


@pytest.mark.parametrize(
    ("resource", "body", "causes"),
    [
        (
            "secrets",
            secret("kubernetes.io/tls"),
            [
                ("FieldValueRequired", "Required value", "data[tls.crt]"),
                ("FieldValueRequired", "Required value", "data[tls.key]"),
            ],
        ),
        (
            "secrets",
            secret("kubernetes.io/tls", **{"tls.crt": "cert"}),
            [("FieldValueRequired", "Required value", "data[tls.key]")],
        ),
        (
            "secrets",
            secret("kubernetes.io/dockerconfigjson"),
            [("FieldValueRequired", "Required value", "data[.dockerconfigjson]")],
        ),
        (
            "secrets",
            secret("kubernetes.io/dockerconfigjson", **{".dockerconfigjson": "[]"}),
            [
                (
                    "FieldValueInvalid",
                    'Invalid value: "<secret contents redacted>": json: cannot unmarshal array '
                    "into Go value of type map[string]interface {}",
                    "data[.dockerconfigjson]",
                )
            ],
        ),
        (
            "secrets",
            secret("kubernetes.io/basic-auth"),
            [
                ("FieldValueRequired", "Required value", "data[username]"),
                ("FieldValueRequired", "Required value", "data[password]"),
            ],
        ),
        (
            "secrets",
            {"metadata": {"name": "s"}, "stringData": {"a/b": "x"}},
            [("FieldValueInvalid", f'Invalid value: "a/b": {CONFIG_KEY}', "data[a/b]")],
        ),
        (
            "configmaps",
            {"metadata": {"name": "c"}, "data": {"dir/file": "x"}},
            [("FieldValueInvalid", f'Invalid value: "dir/file": {CONFIG_KEY}', "data[dir/file]")],
        ),
        (
            "configmaps",
            {"metadata": {"name": "c"}, "data": {"..x": "x"}},
            [
                (
                    "FieldValueInvalid",
                    "Invalid value: \"..x\": must not start with '..'",
                    "data[..x]",
                )
            ],
        ),
        (
            "configmaps",
            {"metadata": {"name": "c"}, "data": {"k": "v"}, "binaryData": {"k": b64("v")}},
            [
                (
                    "FieldValueInvalid",
                    'Invalid value: "k": duplicate of key present in binaryData',
                    "data[k]",
                )
            ],
        ),
        (
            "pods",
            pod(containers=[{"name": "Main_1", "image": "busybox:1.36"}]),
            [("FieldValueInvalid", f'Invalid value: "Main_1": {LABEL}', "spec.containers[0].name")],
        ),
        (
            "pods",
            pod(restartPolicy="Sometimes"),
            [
                (
                    "FieldValueNotSupported",
                    'Unsupported value: "Sometimes": supported values: "Always", "OnFailure", '
                    '"Never"',
                    "spec.restartPolicy",
                )
            ],
        ),
        (
            "deployments",
            {**deployment("web"), "spec": {**deployment("web")["spec"], "replicas": -1}},
            [
                (
                    "FieldValueInvalid",
                    "Invalid value: -1: must be greater than or equal to 0",
                    "spec.replicas",
                )
            ],
        ),
    ],
    ids=[
        "a TLS Secret needs tls.crt and tls.key",
        "a TLS Secret with a certificate still needs its key",
        "a dockerconfigjson Secret needs .dockerconfigjson",
        "a dockerconfigjson Secret's .dockerconfigjson is a JSON object",
        "a basic-auth Secret needs a username or a password",
        "a Secret key with a slash is refused, stringData too",
        "a ConfigMap key with a slash is refused",
        "a ConfigMap key may not start with two dots",
        "the same key in data and binaryData is refused",
        "a container name is an RFC 1123 label",
        "restartPolicy Sometimes is not supported",
        "replicas may not be negative",
    ],
)
async def test_invalid_builtin_objects_are_422_with_kubes_causes(
    k8s: ApiClient, resource: str, body: dict[str, Any], causes: list[tuple[str, str, str]]
) -> None:
    v1, apps = client.CoreV1Api(k8s), client.AppsV1Api(k8s)
    create = {
        "secrets": v1.create_namespaced_secret,
        "configmaps": v1.create_namespaced_config_map,
        "pods": v1.create_namespaced_pod,
        "deployments": apps.create_namespaced_deployment,
    }[resource]
    with pytest.raises(client.ApiException) as err:
        await create("default", body)
    assert err.value.status == 422
    status = json.loads(err.value.body)
    assert status["reason"] == "Invalid"
    got = [(c["reason"], c["message"], c["field"]) for c in status["details"]["causes"]]
    assert got == causes
    rendered = [f"{f}: {m}" for _, m, f in causes]
    joined = rendered[0] if len(rendered) == 1 else "[" + ", ".join(rendered) + "]"
    assert status["message"].endswith(f'"{body["metadata"]["name"]}" is invalid: {joined}')


async def test_a_replicaset_template_must_restart_always(k8s: ApiClient) -> None:
    apps = client.AppsV1Api(k8s)
    body = deployment("web")
    body["spec"]["template"]["spec"]["restartPolicy"] = "Never"
    with pytest.raises(client.ApiException) as err:
        await apps.create_namespaced_deployment("default", body)
    assert err.value.status == 422
    assert json.loads(err.value.body)["details"]["causes"] == [
        {
            "reason": "FieldValueNotSupported",
            "message": 'Unsupported value: "Never": supported values: "Always"',
            "field": "spec.template.spec.restartPolicy",
        }
    ]


async def test_valid_secrets_of_each_type_are_accepted(k8s: ApiClient) -> None:
    v1 = client.CoreV1Api(k8s)
    tls = secret("kubernetes.io/tls", **{"tls.crt": "cert", "tls.key": "key"})
    await v1.create_namespaced_secret("default", tls)
    docker = secret("kubernetes.io/dockerconfigjson", **{".dockerconfigjson": '{"auths":{}}'})
    docker["metadata"]["name"] = "pull"
    await v1.create_namespaced_secret("default", docker)
    # an update that drops the key is refused too
    stored = await v1.read_namespaced_secret("s", "default")
    stored.data.pop("tls.key")
    with pytest.raises(client.ApiException) as err:
        await v1.replace_namespaced_secret("s", "default", stored)
    assert err.value.status == 422


async def post(http: aiohttp.ClientSession, resource: str, body: dict[str, Any]) -> Any:
    """A large body, streamed (aiohttp warns about sending megabytes of bytes at once)."""
    async with http.post(
        f"/api/v1/namespaces/default/{resource}",
        data=io.BytesIO(json.dumps(body).encode()),
        headers={"Content-Type": "application/json"},
    ) as resp:
        return resp.status, await resp.json()


@pytest.mark.parametrize(
    ("resource", "body", "field", "kind"),
    [
        ("secrets", secret("Opaque", big="x" * (MIB + 1)), "data", "Secret"),
        (
            "configmaps",
            {"metadata": {"name": "s"}, "data": {"a": "x" * MIB, "b": "y"}},
            "[]",
            "ConfigMap",
        ),
    ],
    ids=["Secret data over 1 MiB is too long", "ConfigMap data over 1 MiB is too long"],
)
async def test_data_over_one_mebibyte_is_422_too_long(
    http: aiohttp.ClientSession, resource: str, body: dict[str, Any], field: str, kind: str
) -> None:
    code, status = await post(http, resource, body)
    assert code == 422
    assert status["message"] == f'{kind} "s" is invalid: {field}: {TOO_LONG}'
    assert status["details"]["causes"] == [
        {"reason": "FieldValueTooLong", "message": TOO_LONG, "field": field}
    ]


async def test_a_body_over_the_request_limit_is_413(http: aiohttp.ClientSession) -> None:
    body = {"metadata": {"name": "c"}, "data": {"a": "x" * (3 * MIB)}}
    code, status = await post(http, "configmaps", body)
    assert code == 413
    assert status["reason"] == "RequestEntityTooLarge"
    assert status["message"] == "Request entity too large: limit is 3145728"
