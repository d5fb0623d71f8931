"""deploy/ applies with the real kubectl to the Kubernetes API emulator, as an operator would.

Two emulated clusters, as in production: `mgmt` gets the CRDs, deploy/management/ and the
declarations for `east`; `east` gets the CRDs, the stand-in Istio workloads, deploy/remote/
and its rendered remote-config. The emulator does not serve ServiceAccount, RBAC or
PodDisruptionBudget (docs/kubeapi.md; the test checks that through discovery, so it notices
when it starts to): those documents go to kubernetes-validate only (test_validate.py) and are
left out of `kubectl apply` here, see docs/deploy.md.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import yaml
from deploykit import DEPLOY, Document, Kubectl, documents

from devstack.kubeapi import KubeAPI

NOT_SERVED = {
    "ServiceAccount",
    "ClusterRole",
    "ClusterRoleBinding",
    "Role",
    "RoleBinding",
    "PodDisruptionBudget",
    "Job",
}
CRDS = (
    "crd/issuedcertificates.certificates.smh.solo.io",
    "crd/podbouncedirectives.certificates.smh.solo.io",
)


async def _cluster(name: str, tmp_path: Path) -> AsyncIterator[Kubectl]:
    async with KubeAPI(name=name, pod_ready_delay=0.05, bookmark_interval=0.2) as api:
        kubeconfig = api.write_kubeconfig(tmp_path / f"{name}.kubeconfig")
        yield Kubectl(kubeconfig, tmp_path / f"{name}-cache")


@pytest.fixture
async def mgmt(tmp_path: Path) -> AsyncIterator[Kubectl]:
    async for kubectl in _cluster("mgmt", tmp_path):
        yield kubectl


@pytest.fixture
async def east(tmp_path: Path) -> AsyncIterator[Kubectl]:
    async for kubectl in _cluster("east", tmp_path):
        yield kubectl


def _served(docs: list[Document]) -> str:
    return yaml.safe_dump_all([d.body for d in docs if d.kind not in NOT_SERVED])


def _folder(name: str, cluster: str = "east") -> list[Document]:
    return [
        doc
        for path in sorted((DEPLOY / name).glob("*.yaml"))
        for doc in documents(path, cluster=cluster)
    ]


async def _install_crds(kubectl: Kubectl) -> None:
    await kubectl("apply", "-f", str(DEPLOY / "crds"))
    await kubectl("wait", "--for=condition=Established", "--timeout=30s", *CRDS)


async def _kinds_served(kubectl: Kubectl) -> set[str]:
    out = await kubectl("api-resources", "--no-headers")
    return {line.split()[-1] for line in out.splitlines() if line.strip()}


async def test_the_kinds_left_out_are_exactly_those_the_emulator_does_not_serve(
    mgmt: Kubectl,
) -> None:
    served = await _kinds_served(mgmt)
    assert not NOT_SERVED & served, "the emulator serves them now: apply them in this test"
    used = {doc.kind for folder in ("management", "remote", "examples") for doc in _folder(folder)}
    assert used - NOT_SERVED <= served | {"IssuedCertificate", "PodBounceDirective"}
    assert used >= NOT_SERVED  # nothing listed here that deploy/ does not have


async def test_management_manifests_apply_and_the_issuer_rolls_out(mgmt: Kubectl) -> None:
    await _install_crds(mgmt)
    manifests = _served(_folder("management"))
    out = await mgmt("apply", "-f", "-", stdin=manifests)
    assert "deployment.apps/meshtrust-issuer created" in out
    await mgmt(
        "rollout",
        "status",
        "-n",
        "meshtrust-system",
        "deployment/meshtrust-issuer",
        "--timeout=30s",
    )
    deployment = json.loads(
        await mgmt("get", "-n", "meshtrust-system", "deployment/meshtrust-issuer", "-o", "json")
    )
    assert deployment["status"]["readyReplicas"] == 2
    # The operator's declarations for a remote cluster, as the demo renders them.
    declarations = (
        (DEPLOY / "examples" / "declarations.yaml").read_text().replace("CLUSTER", "east")
    )
    out = await mgmt("apply", "-f", "-", stdin=declarations)
    assert "issuedcertificate.certificates.smh.solo.io/istio-cacerts created" in out
    # Applying the same again changes nothing: the manifests hold no server-set fields.
    again = await mgmt("apply", "-f", "-", stdin=manifests)
    assert again.strip()
    assert all(line.endswith("unchanged") for line in again.splitlines())


async def test_remote_manifests_apply_next_to_the_workloads(east: Kubectl) -> None:
    await _install_crds(east)
    await east("apply", "-f", str(DEPLOY / "examples" / "workloads.yaml"))
    config = _served(documents(DEPLOY / "examples" / "remote-config.yaml", cluster="east"))
    manifests = _served(_folder("remote"))
    namespace = _served([d for d in _folder("remote") if d.kind == "Namespace"])
    await east("apply", "-f", "-", stdin=namespace)  # first: the ConfigMap goes into it
    await east("apply", "-f", "-", stdin=config)
    out = await east("apply", "-f", "-", stdin=manifests)
    assert "deployment.apps/meshtrust-agent created" in out
    assert "deployment.apps/meshtrust-bouncer created" in out
    for name in ("meshtrust-agent", "meshtrust-bouncer"):
        await east(
            "rollout", "status", "-n", "meshtrust-system", f"deployment/{name}", "--timeout=30s"
        )
    cm = json.loads(
        await east("get", "-n", "meshtrust-system", "configmap/meshtrust-config", "-o", "json")
    )
    assert cm["data"]["cluster"] == "east"


async def test_a_declaration_that_breaks_the_crd_schema_is_refused(mgmt: Kubectl) -> None:
    # Guards the declarations' apply above: the emulator enforces the CRD schema. (It does not
    # check built-in kinds' fields: an unknown Deployment field is accepted, where
    # kube-apiserver would refuse it; kubernetes-validate in test_validate.py covers those.)
    await _install_crds(mgmt)
    text = (DEPLOY / "examples" / "declarations.yaml").read_text().replace("CLUSTER", "east")
    docs = list(yaml.safe_load_all(text))
    await mgmt("apply", "-f", "-", stdin=yaml.safe_dump(docs[0]))  # the namespace
    broken = next(d for d in docs if d["kind"] == "IssuedCertificate")
    broken["spec"]["hosts"] = "spiffe://not-a-list"
    rc, _out, err = await mgmt.run("apply", "-f", "-", stdin=yaml.safe_dump(broken))
    assert rc != 0
    assert "spec.hosts" in err
