"""`KubeAPI(authorization="RBAC")`: ServiceAccount tokens, Roles and bindings enforced with kube's
401 and 403, impersonation, and the reviews behind `kubectl auth can-i`, through HTTP and kubectl.

kubectl sends a bearer token only over https, hence TLS here."""

from __future__ import annotations

import json
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from devstack.kubeapi import KubeAPI

from .conftest import Kubectl

SA = "system:serviceaccount:apps:reader"
ROLE = {
    "apiVersion": "rbac.authorization.k8s.io/v1",
    "kind": "Role",
    "metadata": {"name": "read-config", "namespace": "apps"},
    "rules": [
        {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list", "watch"]},
        {
            "apiGroups": [""],
            "resources": ["secrets"],
            "resourceNames": ["mine"],
            "verbs": ["get", "list"],
        },
    ],
}
BINDING = {
    "apiVersion": "rbac.authorization.k8s.io/v1",
    "kind": "RoleBinding",
    "metadata": {"name": "reader", "namespace": "apps"},
    "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "read-config"},
    "subjects": [{"kind": "ServiceAccount", "name": "reader", "namespace": "apps"}],
}


class Http:
    """Requests to the cluster as its admin, or with another token."""

    def __init__(self, api: KubeAPI, session: aiohttp.ClientSession) -> None:
        assert api.ca_pem is not None
        self.api, self.session = api, session
        self.ssl = ssl.create_default_context(cadata=api.ca_pem.decode())

    async def __call__(
        self, method: str, path: str, body: Any = None, *, token: str | None = None, **headers: str
    ) -> tuple[int, Any]:
        if token != "":  # "": no credentials at all; None: the admin's
            headers["Authorization"] = f"Bearer {token or self.api.token}"
        async with self.session.request(
            method, f"{self.api.url}{path}", json=body, headers=headers, ssl=self.ssl
        ) as resp:
            return resp.status, await resp.json()

    async def token(self, namespace: str, name: str) -> str:
        status, out = await self(
            "POST", f"/api/v1/namespaces/{namespace}/serviceaccounts/{name}/token", {"spec": {}}
        )
        assert status == 201, out
        return str(out["status"]["token"])


@pytest.fixture
async def rbac_api() -> AsyncIterator[KubeAPI]:
    async with KubeAPI(name="rbac", tls=True, authorization="RBAC") as cluster:
        yield cluster


@pytest.fixture
async def http(rbac_api: KubeAPI) -> AsyncIterator[Http]:
    async with aiohttp.ClientSession() as session:
        h = Http(rbac_api, session)
        for path, body in [
            ("/api/v1/namespaces", {"metadata": {"name": "apps"}}),
            ("/api/v1/namespaces/apps/serviceaccounts", {"metadata": {"name": "reader"}}),
            ("/apis/rbac.authorization.k8s.io/v1/namespaces/apps/roles", ROLE),
            ("/apis/rbac.authorization.k8s.io/v1/namespaces/apps/rolebindings", BINDING),
            ("/api/v1/namespaces/apps/secrets", {"metadata": {"name": "mine"}}),
            ("/api/v1/namespaces/apps/secrets", {"metadata": {"name": "other"}}),
        ]:
            status, out = await h("POST", path, body)
            assert status == 201, out
        yield h


@pytest.fixture
def kubectl(rbac_api: KubeAPI, tmp_path: Path) -> Kubectl:
    return Kubectl(rbac_api.write_kubeconfig(tmp_path / "kubeconfig"), tmp_path / "kube-cache")


async def test_a_service_account_token_is_the_service_account(http: Http) -> None:
    token = await http.token("apps", "reader")
    status, out = await http(
        "POST",
        "/apis/authorization.k8s.io/v1/selfsubjectrulesreviews",
        {"spec": {"namespace": "apps"}},
        token=token,
    )
    assert status == 201
    assert {
        "verbs": ["get", "list"],
        "apiGroups": [""],
        "resources": ["secrets"],
        "resourceNames": ["mine"],
    } in out["status"]["resourceRules"]
    assert (await http("GET", "/api/v1/namespaces/apps/secrets/mine", token=token))[0] == 200


@pytest.mark.parametrize("token", ["", "not-a-token", "a.b.c"], ids=["none", "garbage", "unsigned"])
async def test_unknown_tokens_are_unauthorized(http: Http, token: str) -> None:
    assert await http("GET", "/api", token=token) == (
        401,
        {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": "Unauthorized",
            "reason": "Unauthorized",
            "code": 401,
        },
    )


async def test_a_deleted_service_account_token_is_unauthorized(http: Http) -> None:
    token = await http.token("apps", "reader")
    assert (await http("DELETE", "/api/v1/namespaces/apps/serviceaccounts/reader"))[0] == 200
    assert (await http("GET", "/api", token=token))[0] == 401
    status, out = await http(
        "POST", "/api/v1/namespaces/apps/serviceaccounts/reader/token", {"spec": {}}
    )
    assert (status, out["reason"]) == (404, "NotFound")


@pytest.mark.parametrize(
    ("method", "path", "message"),
    [
        (
            "GET",
            "/api/v1/namespaces/apps/secrets/other",
            f'secrets "other" is forbidden: User "{SA}" cannot get resource "secrets"'
            ' in API group "" in the namespace "apps"',
        ),
        (
            "GET",
            "/api/v1/namespaces/apps/secrets",
            f'secrets is forbidden: User "{SA}" cannot list resource "secrets"'
            ' in API group "" in the namespace "apps"',
        ),
        (
            "GET",
            "/api/v1/namespaces/apps/secrets?watch=true",
            f'secrets is forbidden: User "{SA}" cannot watch resource "secrets"'
            ' in API group "" in the namespace "apps"',
        ),
        (
            "GET",
            "/api/v1/configmaps",
            f'configmaps is forbidden: User "{SA}" cannot list resource "configmaps"'
            ' in API group "" at the cluster scope',
        ),
        (
            "DELETE",
            "/api/v1/namespaces/apps/configmaps/x",
            f'configmaps "x" is forbidden: User "{SA}" cannot delete resource "configmaps"'
            ' in API group "" in the namespace "apps"',
        ),
        (
            "GET",
            "/apis/rbac.authorization.k8s.io/v1/clusterroles",
            "clusterroles.rbac.authorization.k8s.io is forbidden: "
            f'User "{SA}" cannot list resource "clusterroles"'
            ' in API group "rbac.authorization.k8s.io" at the cluster scope',
        ),
        ("GET", "/metrics", f'forbidden: User "{SA}" cannot get path "/metrics"'),
    ],
    ids=[
        "another secret",
        "listing secrets",
        "watching secrets",
        "another namespace",
        "another verb",
        "cluster scope",
        "a path",
    ],
)
async def test_refusals_are_kubes_403(http: Http, method: str, path: str, message: str) -> None:
    status, out = await http(method, path, token=await http.token("apps", "reader"))
    assert (status, out["reason"], out["message"]) == (403, "Forbidden", message)


async def test_a_list_selecting_a_granted_name_is_allowed(http: Http) -> None:
    token = await http.token("apps", "reader")
    path = "/api/v1/namespaces/apps/secrets?fieldSelector=metadata.name%3Dmine"
    status, out = await http("GET", path, token=token)
    assert (status, [i["metadata"]["name"] for i in out["items"]]) == (200, ["mine"])
    status, _ = await http("GET", path.replace("mine", "other"), token=token)
    assert status == 403


async def test_a_binding_to_a_missing_role_says_so(http: Http) -> None:
    binding = BINDING | {
        "metadata": {"name": "broken", "namespace": "apps"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "gone"},
    }
    assert (
        await http(
            "POST", "/apis/rbac.authorization.k8s.io/v1/namespaces/apps/rolebindings", binding
        )
    )[0] == 201
    status, out = await http(
        "GET", "/api/v1/namespaces/apps/pods", token=await http.token("apps", "reader")
    )
    assert status == 403
    assert out["message"].endswith(': RBAC: clusterrole.rbac.authorization.k8s.io "gone" not found')


async def test_impersonation_needs_the_impersonate_verb(http: Http) -> None:
    status, out = await http(
        "GET", "/api/v1/namespaces/apps/secrets/other", **{"Impersonate-User": SA}
    )
    assert (status, out["message"]) == (
        403,
        f'secrets "other" is forbidden: User "{SA}" cannot get resource "secrets"'
        ' in API group "" in the namespace "apps"',
    )
    status, out = await http(
        "GET",
        "/api/v1/namespaces/apps/secrets/mine",
        token=await http.token("apps", "reader"),
        **{"Impersonate-User": "admin"},
    )
    assert (status, out["message"]) == (
        403,
        f'users "admin" is forbidden: User "{SA}" cannot impersonate resource "users"'
        ' in API group "" at the cluster scope',
    )


async def test_kubectl_create_token_and_use_it(
    http: Http, kubectl: Kubectl, rbac_api: KubeAPI
) -> None:
    token = (await kubectl("create", "token", "reader", "-n", "apps")).out.strip()
    assert (await http("GET", "/api/v1/namespaces/apps/secrets/mine", token=token))[0] == 200
    denied = await kubectl("--token", token, "get", "secret", "other", "-n", "apps", check=False)
    assert denied.rc == 1
    assert (
        'Error from server (Forbidden): secrets "other" is forbidden: '
        f'User "{SA}" cannot get resource "secrets"'
        ' in API group "" in the namespace "apps"' in denied.err
    )


async def test_kubectl_as_a_service_account(http: Http, kubectl: Kubectl) -> None:
    assert (
        await kubectl("--as", SA, "get", "secret", "mine", "-n", "apps", "-o", "name")
    ).out == "secret/mine\n"
    denied = await kubectl("--as", SA, "get", "secret", "other", "-n", "apps", check=False)
    assert denied.rc == 1
    assert f'secrets "other" is forbidden: User "{SA}" cannot get resource "secrets"' in denied.err


@pytest.mark.parametrize(
    ("args", "answer"),
    [
        (("get", "secret/mine"), "yes"),
        (("get", "secret/other"), "no"),
        (("list", "configmaps"), "yes"),
        (("delete", "configmaps"), "no"),
        (("get", "pods"), "no"),
        (("get", "/apis"), "yes"),
    ],
    ids=[
        "a granted name",
        "another name",
        "a granted verb",
        "another verb",
        "another resource",
        "discovery",
    ],
)
async def test_kubectl_auth_can_i(
    http: Http, kubectl: Kubectl, args: tuple[str, ...], answer: str
) -> None:
    res = await kubectl("auth", "can-i", *args, "-n", "apps", "--as", SA, check=False)
    assert (res.out.strip(), res.rc) == (answer, 0 if answer == "yes" else 1)


async def test_kubectl_auth_can_i_list(http: Http, kubectl: Kubectl) -> None:
    out = (await kubectl("auth", "can-i", "--list", "-n", "apps", "--as", SA)).out
    rows = {tuple(line.split()) for line in out.splitlines()[1:]}
    assert ("secrets", "[]", "[mine]", "[get", "list]") in rows
    assert ("configmaps", "[]", "[]", "[get", "list", "watch]") in rows
    assert ("selfsubjectaccessreviews.authorization.k8s.io", "[]", "[]", "[create]") in rows


async def test_the_admin_is_cluster_admin(http: Http, kubectl: Kubectl) -> None:
    assert (await kubectl("auth", "can-i", "*", "*")).out.strip() == "yes"
    names = (await kubectl("get", "clusterrolebindings", "-o", "name")).out.split()
    assert "clusterrolebinding.rbac.authorization.k8s.io/cluster-admin" in names


async def test_kubectl_auth_whoami(http: Http, kubectl: Kubectl) -> None:
    out = (await kubectl("auth", "whoami", "--as", SA, "-o", "json")).out
    info = json.loads(out)["status"]["userInfo"]
    assert info == {
        "username": SA,
        "groups": ["system:serviceaccounts", "system:serviceaccounts:apps", "system:authenticated"],
    }
