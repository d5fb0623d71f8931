"""`meshtrust rotate` against the emulated management cluster (the issuer's part is played by
the test writing the status, as the issuer would)."""

from __future__ import annotations

import argparse
import asyncio
import io
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from k8s.harness import crd_documents

from cli import rotate
from cli.__main__ import parser
from shared.api.rotations import CertificateRotation, ClusterProgress, Phase, Step
from shared.k8s import KubeClient, KubeError
from shared.k8s.resources import CUSTOM_RESOURCE_DEFINITIONS, NAMESPACES
from support.waiting import eventually

NS = "meshtrust-system"


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[tuple[KubeClient, Path]]:
    from devstack.kubeapi import KubeAPI

    async with KubeAPI(name="mgmt", tls=False, token=None) as api:
        path = api.write_kubeconfig(tmp_path / "mgmt.kubeconfig")
        async with KubeClient.from_kubeconfig_dict(api.kubeconfig_dict()) as kube:
            for doc in crd_documents():
                await kube.create(CUSTOM_RESOURCE_DEFINITIONS, doc)
            await kube.create(NAMESPACES, {"metadata": {"name": NS}})

            async def served() -> bool:
                try:
                    await kube.list(rotate.ROTATIONS, namespace=NS)
                except KubeError:
                    return False
                return True

            await eventually(served, message="the CertificateRotation CRD to be served")
            yield kube, path


def args_of(path: Path, *argv: str) -> argparse.Namespace:
    return parser().parse_args(["rotate", *argv, "--kubeconfig", str(path)])


async def meshtrust(path: Path, *argv: str) -> str:
    args = args_of(path, *argv)
    out = io.StringIO()
    assert await rotate.execute(args, out) == 0
    return out.getvalue()


async def get(kube: KubeClient, name: str) -> dict[str, Any]:
    return await kube.get(rotate.ROTATIONS, name, namespace=NS)


async def set_status(kube: KubeClient, name: str, **status: Any) -> None:
    """What the issuer does: PUT /status."""
    raw = await get(kube, name)
    await kube.replace_status(rotate.ROTATIONS, {**raw, "status": status})


async def test_start_creates_the_rotation_the_options_ask_for(
    cluster: tuple[KubeClient, Path],
) -> None:
    kube, path = cluster
    out = await meshtrust(
        path,
        *("start", "to-2027", "--from", "cacerts", "--to", "other-ns/cacerts-2027"),
        *("--clusters", "east, west", "--wave-size", "2", "--canary", "east", "--manual"),
        *("--pause", "30s", "--grace", "1h"),
    )
    assert "to-2027 created" in out
    spec = (await get(kube, "to-2027"))["spec"]
    assert spec == {
        "signingCertificateSecret": {"namespace": NS, "name": "cacerts"},
        "newSigningCertificateSecret": {"namespace": "other-ns", "name": "cacerts-2027"},
        "clusters": ["east", "west"],
        "waveSize": 2,
        "canary": "east",
        "approval": "Manual",
        "pauseBetweenPhases": "30s",
        "gracePeriod": "1h",
    }


async def test_start_refuses_a_bad_duration_before_sending_anything(
    cluster: tuple[KubeClient, Path],
) -> None:
    kube, path = cluster
    args = args_of(path, "start", "r", "--from", "a", "--to", "b", "--grace", "1d")
    with pytest.raises(rotate.RotateError, match="1d"):
        await rotate.execute(args, io.StringIO())
    assert (await kube.list(rotate.ROTATIONS, namespace=NS)).items == []


async def test_start_selects_clusters_by_label_in_kubectl_syntax_and_status_shows_it(
    cluster: tuple[KubeClient, Path],
) -> None:
    kube, path = cluster
    selector = "env=prod,tier in (a,b),!legacy"
    await meshtrust(path, "start", "r", "--from", "a", "--to", "b", "-l", selector)
    spec = (await get(kube, "r"))["spec"]
    assert spec["clusterSelector"] == {
        "matchLabels": {"env": "prod"},
        "matchExpressions": [
            {"key": "tier", "operator": "In", "values": ["a", "b"]},
            {"key": "legacy", "operator": "DoesNotExist"},
        ],
    }
    assert "clusters" not in spec
    assert "allowTrustSplit" not in spec
    assert f"clusters selected by: {selector}\n" in await meshtrust(path, "status", "r")
    both = ("--clusters", "east,west", "--selector", "region notin (eu),zone")
    await meshtrust(path, "start", "both", "--from", "a", "--to", "b", *both, "--allow-trust-split")
    spec = (await get(kube, "both"))["spec"]
    assert spec["clusters"] == ["east", "west"]
    assert spec["allowTrustSplit"] is True
    assert spec["clusterSelector"] == {
        "matchExpressions": [
            {"key": "region", "operator": "NotIn", "values": ["eu"]},
            {"key": "zone", "operator": "Exists"},
        ]
    }
    await meshtrust(path, "start", "every", "--from", "a", "--to", "b", "-l", "")
    assert (await get(kube, "every"))["spec"]["clusterSelector"] == {}
    assert "selected by: (every registered cluster)" in await meshtrust(path, "status", "every")


@pytest.mark.parametrize(
    ("selector", "why"),
    [
        ("env=prod tier=a", "expected ',' between requirements at 'tier'"),
        ("tier in ()", "at least one value"),
        ("tier in (a", "expected '\\)' closing"),
        ("replicas>2", "no < or >"),
        ("env=prod,", "after ','"),
        ("env_=x", "label key 'env_'"),
        ("env=x y", "at 'y'"),
    ],
)
async def test_start_refuses_a_bad_selector_before_sending_anything(
    cluster: tuple[KubeClient, Path], selector: str, why: str
) -> None:
    kube, path = cluster
    args = args_of(path, "start", "r", "--from", "a", "--to", "b", "-l", selector)
    with pytest.raises(rotate.RotateError, match=f"invalid --selector: .*{why}"):
        await rotate.execute(args, io.StringIO())
    assert (await kube.list(rotate.ROTATIONS, namespace=NS)).items == []


async def test_approve_lets_the_awaited_phase_start_and_refuses_when_nothing_awaits(
    cluster: tuple[KubeClient, Path],
) -> None:
    kube, path = cluster
    await meshtrust(path, "start", "r", "--from", "a", "--to", "b", "--manual")
    args = args_of(path, "approve", "r")
    with pytest.raises(rotate.RotateError, match="awaits no approval"):
        await rotate.execute(args, io.StringIO())
    await set_status(
        kube, "r", phase="AddingNewRoot", awaitingApproval="PropagatingNewIntermediate"
    )
    out = await meshtrust(path, "approve", "r")
    assert "PropagatingNewIntermediate approved" in out
    assert (await get(kube, "r"))["spec"]["approvedPhase"] == "PropagatingNewIntermediate"
    status = await meshtrust(path, "status", "r")
    assert "awaiting approval of PropagatingNewIntermediate" in status


async def test_abort_asks_for_a_rollback_and_is_refused_once_the_old_root_goes(
    cluster: tuple[KubeClient, Path],
) -> None:
    kube, path = cluster
    await meshtrust(path, "start", "r", "--from", "a", "--to", "b")
    await set_status(kube, "r", phase="PropagatingNewIntermediate")
    assert "rolls back" in await meshtrust(path, "abort", "r")
    assert (await get(kube, "r"))["spec"]["abort"] is True
    await meshtrust(path, "start", "late", "--from", "a", "--to", "b")
    await set_status(kube, "late", phase="DeletingOldRoot")
    args = args_of(path, "abort", "late")
    with pytest.raises(rotate.RotateError, match="too late"):
        await rotate.execute(args, io.StringIO())
    assert "abort" not in (await get(kube, "late"))["spec"]


async def test_start_wait_follows_the_rotation_to_its_end(
    cluster: tuple[KubeClient, Path],
) -> None:
    kube, path = cluster
    args = args_of(path, "start", "r", "--from", "a", "--to", "b", "--wait", "--timeout", "30")
    out = io.StringIO()
    following = asyncio.create_task(rotate.execute(args, out))
    await eventually(lambda: "rotation r: Pending" in out.getvalue(), message="the first report")
    since = datetime.now(UTC).isoformat()
    line = {"name": "east", "step": "add", "state": "InProgress", "since": since}
    await set_status(kube, "r", phase="AddingNewRoot", clusters=[line])
    await eventually(lambda: "AddingNewRoot" in out.getvalue(), message="the phase change")
    await set_status(kube, "r", phase="Succeeded")
    assert await asyncio.wait_for(following, 30) == 0
    assert "rotation r: Succeeded" in out.getvalue()


def test_the_status_report_shows_each_clusters_step_state_and_error() -> None:
    now = datetime(2026, 12, 7, 12, tzinfo=UTC)
    rotation = CertificateRotation.model_validate(
        {
            "metadata": {"name": "r"},
            "spec": {
                "signingCertificateSecret": {"namespace": NS, "name": "a"},
                "newSigningCertificateSecret": {"namespace": NS, "name": "b"},
            },
            "status": {"phase": Phase.ADDING_NEW_ROOT, "paused": True, "error": "cluster west"},
        }
    )
    lines = (
        ClusterProgress(name="east", step=Step.ADD, state="Done", since=now - timedelta(minutes=3)),
        ClusterProgress(name="west", step=Step.ADD, state="Failed", error="UntrustedRoot"),
        ClusterProgress(name="north", state="Pending"),
    )
    rotation = rotation.model_copy(
        update={"status": rotation.status.model_copy(update={"clusters": lines})}
    )
    text = rotate.report(rotation, now=now)
    assert text.splitlines()[0] == "rotation r: AddingNewRoot (paused)"
    assert "error: cluster west" in text
    rows = [line.split() for line in text.splitlines()[3:]]
    assert rows[0][:4] == ["east", "add", "Done", "3m"]
    assert rows[1][:3] == ["west", "add", "Failed"]
    assert rows[1][-1] == "UntrustedRoot"
    assert rows[2][:3] == ["north", "-", "Pending"]


async def test_the_command_line_exits_1_with_one_line_for_a_missing_rotation(
    cluster: tuple[KubeClient, Path],
) -> None:
    _, path = cluster
    proc = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "cli", "rotate", "status", "nope", "--kubeconfig", str(path)),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 1
    assert err.decode().strip() == f"meshtrust rotate: no CertificateRotation {NS}/nope"
