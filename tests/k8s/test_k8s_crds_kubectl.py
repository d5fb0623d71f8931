"""The CRDs as an operator meets them: `kubectl apply -f deploy/crds/`, validation, `get ic`."""

from __future__ import annotations

import asyncio
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from k8s.harness import CRD_DIR, eventually, issued_certificate

KUBECTL = Path(sys.executable).parent / "kubectl"


@dataclass
class Result:
    code: int
    out: str
    err: str


class Kubectl:
    """Runs the real kubectl against the emulator (asynchronously: the server is in this loop)."""

    def __init__(self, kubeconfig: Path) -> None:
        self.kubeconfig = kubeconfig

    async def __call__(self, *args: str, stdin: str | None = None) -> Result:
        proc = await asyncio.create_subprocess_exec(
            str(KUBECTL),
            f"--kubeconfig={self.kubeconfig}",
            *args,
            stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(stdin.encode() if stdin else None), 60)
        assert proc.returncode is not None
        return Result(proc.returncode, out.decode(), err.decode())


@pytest.fixture
async def kubectl(kubeapi: Any, tmp_path: Path) -> Kubectl:
    path = tmp_path / "kubeconfig"
    kubeapi.write_kubeconfig(path)
    return Kubectl(path)


@pytest.fixture
async def applied(kubectl: Kubectl) -> Kubectl:
    result = await kubectl("apply", "-f", str(CRD_DIR))
    assert result.code == 0, result.err
    assert "issuedcertificates.certificates.smh.solo.io created" in result.out
    assert "podbouncedirectives.certificates.smh.solo.io created" in result.out

    async def served() -> bool:
        return (await kubectl("get", "ic", "-A")).code == 0

    await eventually(served, message="kubectl to find the ic short name")
    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "east"}}
    created = await kubectl("apply", "-f", "-", stdin=yaml.safe_dump(namespace))
    assert created.code == 0, created.err
    return kubectl


async def test_the_crds_apply_and_apply_again_unchanged(applied: Kubectl) -> None:
    again = await applied("apply", "-f", str(CRD_DIR))
    assert again.code == 0, again.err
    assert "unchanged" in again.out


async def test_kubectl_get_ic_shows_the_printer_columns(applied: Kubectl) -> None:
    body = issued_certificate("istio", "east")
    created = await applied("apply", "-f", "-", stdin=yaml.safe_dump(body))
    assert created.code == 0, created.err
    result = await applied("get", "ic", "-n", "east")
    assert result.code == 0, result.err
    header = result.out.splitlines()[0].split()
    assert header == ["NAME", "STATE", "ERROR", "EXPIRES", "AGE"]
    assert result.out.splitlines()[1].split()[0] == "istio"


async def test_kubectl_get_pbd_uses_the_short_name(applied: Kubectl) -> None:
    body = {
        "apiVersion": "certificates.smh.solo.io/v1alpha2",
        "kind": "PodBounceDirective",
        "metadata": {"name": "istio", "namespace": "east"},
        "spec": {"podsToBounce": [{"namespace": "istio-system", "labels": {"app": "istiod"}}]},
    }
    created = await applied("apply", "-f", "-", stdin=yaml.safe_dump(body))
    assert created.code == 0, created.err
    result = await applied("get", "pbd", "-n", "east", "-o", "yaml")
    assert result.code == 0, result.err
    obj = yaml.safe_load(result.out)["items"][0]
    assert obj["spec"]["podsToBounce"][0]["strategy"] == "Delete", "the schema default applied"


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        pytest.param({"hosts": []}, "spec.hosts", id="empty hosts are refused"),
        pytest.param(
            {"certOptions": {"keyAlgorithm": "DSA"}},
            "spec.certOptions.keyAlgorithm",
            id="an unknown key algorithm is refused",
        ),
        pytest.param(
            {"certOptions": {"keySize": 1024}},
            "spec.certOptions.keySize",
            id="an unlisted key size is refused",
        ),
        pytest.param(
            {"certOptions": {"ttlDays": 0}},
            "spec.certOptions.ttlDays",
            id="a zero ttlDays is refused",
        ),
        pytest.param(
            {"certOptions": {"ttl": "30d"}}, "spec.certOptions.ttl", id="a ttl in days is refused"
        ),
        pytest.param(
            {"certOptions": {"secretRotationGracePeriodRatio": 1.5}},
            "spec.certOptions.secretRotationGracePeriodRatio",
            id="a grace ratio above one is refused",
        ),
        pytest.param(
            {"issuedCertificateSecret": {"name": "x"}},
            "spec.issuedCertificateSecret.namespace",
            id="an ObjectRef needs its namespace",
        ),
    ],
)
async def test_invalid_issued_certificates_are_refused_with_the_field_path(
    applied: Kubectl, spec: dict[str, Any], field: str
) -> None:
    body = issued_certificate("bad", "east", **spec)
    result = await applied("apply", "-f", "-", stdin=yaml.safe_dump(body))
    assert result.code != 0
    assert "is invalid" in result.err
    assert field in result.err


async def test_kubectl_explain_shows_the_api_reference(applied: Kubectl) -> None:
    result = await applied("explain", "issuedcertificates.spec.hosts")
    assert result.code == 0, result.err
    assert "A list of hostnames and IPs to generate a certificate for" in result.out
