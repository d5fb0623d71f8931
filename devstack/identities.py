"""Who the local stack's services are to their clusters: a ServiceAccount each, bound by the RBAC
of deploy/ (applied from deploy/ itself), and a kubeconfig holding that ServiceAccount's token.

The emulated clusters run with `--authorization-mode RBAC` and `--tls` (kubectl sends no
token over plain HTTP; docs/kubeapi.md). The admin
kubeconfig (`.devstack/<cluster>.kubeconfig`, written by the emulator) stays cluster-admin for the
operator, kubectl, the seeding and the tests; each service process is started with its own
(`.devstack/<cluster>-<service>.kubeconfig`, mode 600): the admin's, with the token of
`meshtrust-system/meshtrust-<service>` in place of the admin's, issued by the TokenRequest API
(what the kubelet mounts in a pod, and what `kubectl create token` asks for).

Tokens are minted again on every `up()`, signed with a key made for that run
(`kube/service-account.key`, mode 600, `--service-account-key-file`): a restart of the emulator
within the run keeps them valid, as a real cluster's restart does; a new `up()` makes a new key,
so the tokens of the previous run are refused. They live `TOKEN_SECONDS` (a year): the services
read their kubeconfig once, and a run outlives no such span.
"""

from __future__ import annotations

import base64
import json
import secrets
import ssl
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from devstack.kubeapi import kubeconfig as kubeconfigs
from devstack.processes import StackError

NAMESPACE = "meshtrust-system"
TOKEN_SECONDS = 365 * 24 * 3600
MGMT_SERVICES = ("issuer",)
REMOTE_SERVICES = ("agent", "bouncer")
MGMT_MANIFESTS = ("management/00-namespace.yaml", "management/issuer-rbac.yaml")
REMOTE_MANIFESTS = (
    "remote/00-namespace.yaml",
    "remote/agent-rbac.yaml",
    "remote/bouncer-rbac.yaml",
)
"""What `kubectl apply` takes from deploy/ per kind of cluster: the ServiceAccounts' namespace,
the ServiceAccounts and their RBAC, as they are (the RoleBindings' namespaces, istio-system and
istio-ingress, come with the workloads of the seeding)."""


def service_account(service: str) -> str:
    return f"meshtrust-{service}"


def manifests(deploy: Path, *, remote: bool) -> list[Path]:
    return [deploy / m for m in (REMOTE_MANIFESTS if remote else MGMT_MANIFESTS)]


def write_signing_key(path: Path) -> None:
    """A fresh key for the ServiceAccount tokens of one run (mode 600 before it is written)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    path.touch(mode=0o600)
    path.write_bytes(secrets.token_bytes(32))


def _admin(kubeconfig: Path) -> tuple[dict[str, Any], str, str]:
    """The admin kubeconfig, its server URL and its token."""
    config = yaml.safe_load(kubeconfig.read_text())
    server = str(config["clusters"][0]["cluster"]["server"])
    token = str(config["users"][0]["user"]["token"])
    return config, server, token


def tls_context(kubeconfig: Path) -> ssl.SSLContext | None:
    """What verifies the cluster of a kubeconfig (its CA), None for a plain-HTTP one."""
    cluster = yaml.safe_load(kubeconfig.read_text())["clusters"][0]["cluster"]
    data = cluster.get("certificate-authority-data")
    if data is None:
        return None
    return ssl.create_default_context(cadata=base64.b64decode(data).decode())


def mint_token(admin_kubeconfig: Path, service: str, *, seconds: int = TOKEN_SECONDS) -> str:
    """A token of the service's ServiceAccount from the TokenRequest API, asked as the admin."""
    _, server, admin_token = _admin(admin_kubeconfig)
    path = f"/api/v1/namespaces/{NAMESPACE}/serviceaccounts/{service_account(service)}/token"
    body = {
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenRequest",
        "spec": {"expirationSeconds": seconds},
    }
    request = urllib.request.Request(  # noqa: S310 (the loopback URL the emulator wrote)
        server + path,
        data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {admin_token}", "Content-Type": "application/json"},
        method="POST",
    )
    context = tls_context(admin_kubeconfig)
    with urllib.request.urlopen(request, timeout=30, context=context) as answer:  # noqa: S310
        return str(json.loads(answer.read())["status"]["token"])


def write_kubeconfig(admin_kubeconfig: Path, path: Path, token: str) -> Path:
    """The admin's kubeconfig with `token` as its user's credential, written with mode 600."""
    config, _, _ = _admin(admin_kubeconfig)
    config["users"][0]["user"] = {"token": token}
    return kubeconfigs.write(path, config)


def issue(admin_kubeconfig: Path, service: str, path: Path, *, cluster: str) -> Path:
    """`path`: the service's kubeconfig, with a token minted now; StackError if none is."""
    try:
        token = mint_token(admin_kubeconfig, service)
    except OSError as exc:  # urllib's errors, HTTP ones included
        raise StackError(f"no token for {service} in {cluster}: {exc}") from exc
    return write_kubeconfig(admin_kubeconfig, path, token)
