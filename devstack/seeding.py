"""What the emulated clusters hold before the services start, applied with kubectl.

Every cluster gets the CRDs of `deploy/crds/`; the management cluster a root CA Secret (made
now by `shared.pki.create_root_ca`); every remote cluster the stand-in workloads of
`deploy/examples/workloads.yaml` and the agent's trust bundle, which pins that root. It runs
no process and knows no kubeconfig: it is given a `Kubectl` (`devstack.stack.Stack.kubectl`).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any, Protocol

import yaml

from shared.pki import KeySpec, create_root_ca

ROOT_CA_SECRET = ("meshtrust-system", "root-ca")
TRUST_BUNDLE = ("meshtrust-system", "meshtrust-trust-bundle")
"""Each remote cluster's trust bundle ConfigMap (the default of MESHTRUST_AGENT_TRUST_BUNDLE)."""


class Kubectl(Protocol):
    def __call__(self, cluster: str, *args: str, stdin: str | None = None) -> str:
        """kubectl's output for `args` against `cluster`, `stdin` as its standard input."""
        ...


def seed(
    kubectl: Kubectl, *, deploy: Path, mgmt: str, remotes: list[str], root_key: KeySpec
) -> None:
    """The CRDs everywhere, the root CA in `mgmt`, workloads and trust bundles in `remotes`."""
    for cluster in [mgmt, *remotes]:
        kubectl(cluster, "apply", "-f", str(deploy / "crds"))
        kubectl(
            cluster, "wait", "--for=condition=Established", "--timeout=60s",
            "crd/issuedcertificates.certificates.smh.solo.io",
            "crd/podbouncedirectives.certificates.smh.solo.io",
        )  # fmt: skip
    data = create_root_ca(
        org="meshtrust demo",
        common_name="meshtrust demo root CA",
        ttl=dt.timedelta(days=3650),
        now=dt.datetime.now(dt.UTC),
        spec=root_key,
    )
    namespace, name = ROOT_CA_SECRET
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace},
        "type": "Opaque",
        "stringData": {k: v.decode() for k, v in data.items()},
    }
    _apply_with_namespace(kubectl, mgmt, secret)  # the root key is written to no file
    for cluster in remotes:
        kubectl(cluster, "apply", "-f", str(deploy / "examples" / "workloads.yaml"))
        pin_root(kubectl, cluster, data["root-cert.pem"])


def pin_root(kubectl: Kubectl, cluster: str, root_pem: bytes) -> None:
    """The agent's trust bundle in `cluster` (deploy/examples/trust-bundle.yaml): the root
    it accepts certificates from. Public; an administrator's step in a real install."""
    namespace, name = TRUST_BUNDLE
    bundle = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace},
        "data": {"roots.pem": root_pem.decode()},
    }
    _apply_with_namespace(kubectl, cluster, bundle)


def _apply_with_namespace(kubectl: Kubectl, cluster: str, body: dict[str, Any]) -> None:
    """`body` and its namespace, applied through stdin: nothing is written to a file."""
    name = body["metadata"]["namespace"]
    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
    kubectl(cluster, "apply", "-f", "-", stdin=yaml.safe_dump_all([namespace, body]))
