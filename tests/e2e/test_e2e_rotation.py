"""Root and intermediate rotation over the real stack, under the trust probe (issue 18).

One stack for the module: mgmt + east (ECDSA P-256) + west (RSA-2048) + north (ECDSA P-256).
Each test starts `meshtrust rotate start` from whatever Secret the declarations name now
(the `world` fixture first finishes what an earlier test left: a Succeeded rotation is adopted
as docs/rotation.md says, re-pin and re-point, so each test also runs alone) while a trust probe
(tests/support/trust_probe.py) samples every cluster's `cacerts` continuously: a leaf from each
cluster's current intermediate, and the last leaf of each previous one, verified against every
cluster's `root-cert.pem`. The guarantees checked after each rotation:

- zero failed verifications from the first sample to the last, a previous intermediate's leaves
  counting until `GRACE` after its cluster reported FINISHED on the next one (the workload
  certificate lifetime the grace period stands for);
- every cluster ends on the expected root only (`root-cert.pem` = [that root]);
- pods bounced once per step per cluster (each pod replaced once each time), and never more than
  the wave size of clusters bouncing at once (bounce.requested to bounce.completed on the bus).

The intermediate-only test runs last: after it the declarations name an intermediate, and a root
rotation from an intermediate needs a `cross-signed.pem` made with the root's key
(docs/rotation.md). 1.5 to 3 minutes for the module, the stack's start included.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from e2e.e2e_audit import events
from e2e.e2e_rotation import (
    FINAL_PHASES,
    ROTATION_NAMESPACE,
    ROTATIONS,
    adopt,
    bounce_windows,
    bounces_per_cluster,
    certificates,
    judged_failures,
    meshtrust,
    most_at_once,
    new_intermediate_secret,
    new_root_secret,
    pem,
    pods_replaced,
    pods_settled,
    probing,
    rotation,
    signing_data,
    wait_cluster_step,
    wait_no_epoch,
    wait_rotation,
)
from e2e.e2e_testing import (
    IC_NAME,
    ISSUED_SECRET,
    PodLog,
    World,
    declarations,
    ensure_running,
    running_stack,
    status_of,
)

from devstack.stack import MGMT, Stack
from shared.k8s.resources import ISSUED_CERTIFICATES
from support.trust_probe import TrustProbe
from support.waiting import eventually

REMOTES = ["east", "west", "north"]
KEYS = {"east": ("ECDSA", 256), "west": ("RSA", 2048), "north": ("ECDSA", 256)}
GRACE = 3
"""Seconds: the rotation's gracePeriod and the probe's workload certificate lifetime."""
POD_READY_DELAY = 0.3
"""Seconds before a new pod is Ready: a bounce lasts over 0.6 s (two selectors), long enough
for two clusters bouncing at once to overlap visibly."""
ROOT_STEPS = ["add", "move", "drop"]
NAMES = itertools.count(2)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("e2e-rotation")
    with running_stack(root, remotes=REMOTES, pod_ready_delay=POD_READY_DELAY) as up:
        for cluster in REMOTES:
            algorithm, size = KEYS[cluster]
            text = declarations(cluster, key_algorithm=algorithm, key_size=size)
            up.kubectl(MGMT, "apply", "-f", "-", stdin=text)
        yield up


@pytest.fixture
async def world(stack: Stack) -> Any:
    """The stack with every process running, no rotation going on, every cluster FINISHED, no
    pod of an earlier bounce still terminating."""
    ensure_running(stack)
    async with World(stack) as w:
        await w.wait_finished({}, within=120)
        await settle(w)
        await eventually(lambda: pods_settled(w), within=30, message="pods settled")
        yield w


async def settle(world: World) -> None:
    """Finish what an earlier test left: adopt a Succeeded rotation's new Secret, roll back
    one still running, delete them all."""
    listed = await world.kube[MGMT].list(ROTATIONS, namespace=ROTATION_NAMESPACE)
    for obj in listed.items:
        name = obj["metadata"]["name"]
        phase = status_of(obj).get("phase")
        if phase == "Succeeded":
            secret = obj["spec"]["newSigningCertificateSecret"]["name"]
            root = (await signing_data(world, secret))["root-cert.pem"]
            await adopt(world, secret, root, rotation_name=name)
            continue
        if phase not in FINAL_PHASES:
            await meshtrust(world.stack, "rotate", "abort", name)
            await wait_rotation(world, name, phase="RolledBack", within=120)
        await world.kube[MGMT].delete(ROTATIONS, name, namespace=ROTATION_NAMESPACE)
        await wait_no_epoch(world, within=120)


async def declared_secret(world: World) -> str:
    """The signing Secret every declaration names now (one for the whole fleet)."""
    names = set()
    for cluster in world.remotes:
        declared = await world.kube[MGMT].get(ISSUED_CERTIFICATES, IC_NAME, namespace=cluster)
        names.add(declared["spec"]["signingCertificateSecret"]["name"])
    assert len(names) == 1, names
    return names.pop()


@dataclass
class Run:
    """One rotation under the probe: what it started from and what it saw."""

    name: str
    secret: str
    new_secret: str
    wave_size: int
    since: dt.datetime
    phases: list[str]

    async def start(self, world: World, *extra: str) -> None:
        await meshtrust(
            world.stack, "rotate", "start", self.name,
            "--from", f"{ROTATION_NAMESPACE}/{self.secret}",
            "--to", f"{ROTATION_NAMESPACE}/{self.new_secret}",
            "--wave-size", str(self.wave_size), "--grace", f"{GRACE}s", *extra,
        )  # fmt: skip


async def begin(world: World, *, new_secret: str, wave_size: int) -> Run:
    name = f"rotation-{next(NAMES)}"
    secret = await declared_secret(world)
    return Run(name, secret, new_secret, wave_size, dt.datetime.now(dt.UTC), [])


async def steps_signed(world: World, since: dt.datetime) -> dict[str, list[str]]:
    """Per cluster, the step of each trust epoch its CSRs carried since `since`, in order."""
    out: dict[str, list[str]] = {c: [] for c in world.remotes}
    for event in await events(world.stack):
        epoch = (event.get("data") or {}).get("trust_epoch")
        if event["type"] != "csr.requested" or not epoch:
            continue
        if dt.datetime.fromisoformat(event["time"].replace("Z", "+00:00")) < since:
            continue
        step = epoch.rsplit(".", 1)[-1]
        steps = out.setdefault(event["cluster"], [])
        if not steps or steps[-1] != step:
            steps.append(step)
    return out


async def check_guarantees(
    world: World,
    run: Run,
    probe: TrustProbe,
    pods: PodLog,
    *,
    root: bytes,
    steps: dict[str, list[str]],
    superseded: bool = False,
) -> None:
    """The guarantees of the module docstring, for a rotation that ended on `root`, each
    cluster having been moved through `steps[cluster]`, each step bounced once (`superseded`:
    an abort may replace a step before or during its bounce, which then stops: at most once)."""
    failures = await judged_failures(world.stack, probe, lifetime=dt.timedelta(seconds=GRACE))
    assert failures == [], "\n".join(failures[:20])
    rounds = len({s.time for s in probe.samples})
    assert rounds >= 10, f"the probe sampled only {rounds} times"

    for cluster, data in (await read_fleet_now(world)).items():
        assert [pem(c) for c in certificates(data["root-cert.pem"])] == [root], cluster
        assert pem(certificates(data["cert-chain.pem"])[-1]) == root, cluster

    windows = await bounce_windows(world.stack, since=run.since)
    unfinished = [w for w in windows if w.end is None]
    assert not unfinished, f"bounces never completed: {unfinished}"
    bounced = bounces_per_cluster(windows)
    if superseded:
        assert all(1 <= bounced.get(c, 0) <= len(s) for c, s in steps.items() if s), bounced
    else:
        assert bounced == {c: len(s) for c, s in steps.items() if s}
    assert most_at_once(windows) <= run.wave_size, [
        f"{w.cluster} {w.start:%H:%M:%S.%f}-{w.end:%H:%M:%S.%f}" for w in windows if w.end
    ]

    async def replaced() -> list[str]:
        return [
            problem
            for c in world.remotes
            for problem in pods_replaced(pods, c, times=bounced.get(c, 0), exact=not superseded)
        ]

    problems = await replaced()
    if problems:  # the pod watch may be a moment behind
        await eventually(lambda: _none(replaced()), within=20, message=f"pods: {problems}")


async def _none(problems: Any) -> bool:
    return not await problems


async def read_fleet_now(world: World) -> dict[str, dict[str, bytes]]:
    out = {}
    for cluster in world.remotes:
        data = await world.secret(cluster, ISSUED_SECRET)
        assert data is not None, f"{cluster}: no cacerts"
        out[cluster] = data
    return out


# --- the root rotation --------------------------------------------------------------------


@pytest.mark.timeout(300)
async def test_a_root_rotation_never_breaks_trust_and_ends_on_the_new_root(world: World) -> None:
    new_secret = f"root-ca-{next(NAMES)}"
    new_root = await new_root_secret(world, new_secret)
    run = await begin(world, new_secret=new_secret, wave_size=1)
    async with PodLog(world) as pods:
        async with probing(world) as probe:
            await run.start(world)
            await wait_rotation(world, run.name, phase="Succeeded", within=240, seen=run.phases)
        steps = await steps_signed(world, run.since)
        assert steps == dict.fromkeys(REMOTES, ROOT_STEPS)
        await check_guarantees(world, run, probe, pods, root=new_root, steps=steps)
    assert [p for p in run.phases if p != "Pending"] == [
        "AddingNewRoot",
        "PropagatingNewIntermediate",
        "WaitingGracePeriod",
        "DeletingOldRoot",
        "Succeeded",
    ]
    # The probe was able to see a break: once the old root was dropped, the leaves of the
    # intermediates signed by it (retired by then) no longer verified anywhere.
    assert any(not s.ok and not s.current for s in probe.samples)
    # Every cluster's intermediate seen changing: before + 3 steps, of which a sample may miss
    # one on a loaded machine (a step lasts about a second; a sample round, 0.1 s and more).
    seen = {c: len(probe.sequence(c)) for c in REMOTES}
    assert all(n in (3, 4) for n in seen.values()), f"intermediates seen: {seen}"
    status = status_of(await rotation(world, run.name))
    assert {(line["name"], line["step"], line["state"]) for line in status["clusters"]} == {
        (c, "drop", "Done") for c in REMOTES
    }


@pytest.mark.timeout(300)
async def test_a_rotation_aborted_in_phase_2_rolls_back_to_the_old_root(world: World) -> None:
    new_secret = f"root-ca-{next(NAMES)}"
    await new_root_secret(world, new_secret)
    run = await begin(world, new_secret=new_secret, wave_size=1)
    old_root = (await signing_data(world, run.secret))["root-cert.pem"]
    async with PodLog(world) as pods:
        async with probing(world) as probe:
            await run.start(world)
            moved = await wait_cluster_step(world, run.name, step="move", state="Done", within=120)
            run.phases.append(status_of(await rotation(world, run.name))["phase"])
            await meshtrust(world.stack, "rotate", "abort", run.name)
            await wait_rotation(world, run.name, phase="RolledBack", within=240, seen=run.phases)
        steps = await steps_signed(world, run.since)
        await check_guarantees(world, run, probe, pods, root=old_root, steps=steps, superseded=True)
    assert steps[moved] == ["add", "move", "back", "undo"]
    assert all(s[-1] == "undo" and "drop" not in s for s in steps.values()), steps
    assert run.phases[0] == "PropagatingNewIntermediate", "aborted in phase 2"
    assert run.phases[-2:] == ["RollingBack", "RolledBack"]
    old_subject = certificates(old_root)[0].subject
    for cluster, data in (await read_fleet_now(world)).items():
        assert certificates(data["ca-cert.pem"])[0].issuer == old_subject, cluster


# --- crashes --------------------------------------------------------------------------------


async def restart(stack: Stack, name: str) -> None:
    await asyncio.to_thread(stack.start, name)


@pytest.mark.timeout(300)
@pytest.mark.parametrize(
    ("victim", "step", "wave_size"),
    [("issuer", "move", 2), ("agent-{cluster}", "add", 3)],
    ids=["the issuer killed in move", "an agent killed in add"],
)
async def test_a_process_killed_mid_phase_the_rotation_ends_with_the_same_guarantees(
    world: World, victim: str, step: str, wave_size: int
) -> None:
    """`victim` (its process name; `{cluster}`: the first cluster seen on `step`) is killed
    while a cluster is in progress on `step`, and started again."""
    new_secret = f"root-ca-{next(NAMES)}"
    new_root = await new_root_secret(world, new_secret)
    run = await begin(world, new_secret=new_secret, wave_size=wave_size)
    async with PodLog(world) as pods:
        async with probing(world) as probe:
            await run.start(world)
            cluster = await wait_cluster_step(
                world, run.name, step=step, state="InProgress", within=120
            )
            process = victim.format(cluster=cluster)
            world.stack.kill(process)
            await restart(world.stack, process)
            await wait_rotation(world, run.name, phase="Succeeded", within=240, seen=run.phases)
        steps = await steps_signed(world, run.since)
        assert steps == dict.fromkeys(REMOTES, ROOT_STEPS)
        await check_guarantees(world, run, probe, pods, root=new_root, steps=steps)


# --- the intermediate alone ---------------------------------------------------------------


@pytest.mark.timeout(300)
async def test_an_intermediate_only_rotation_reissues_in_waves_under_the_same_root(
    world: World,
) -> None:
    new_secret = f"intermediate-{next(NAMES)}"
    run = await begin(world, new_secret=new_secret, wave_size=2)
    inter = certificates(await new_intermediate_secret(world, new_secret, under=run.secret))[0]
    root = (await signing_data(world, run.secret))["root-cert.pem"]
    async with PodLog(world) as pods:
        async with probing(world) as probe:
            await run.start(world, "--canary", "west")
            await wait_rotation(world, run.name, phase="Succeeded", within=240, seen=run.phases)
        steps = await steps_signed(world, run.since)
        assert steps == {key: ["reissue"] for key in REMOTES}
        await check_guarantees(world, run, probe, pods, root=root, steps=steps)
    assert [p for p in run.phases if p != "Pending"] == ["Reissuing", "Succeeded"]
    for cluster, data in (await read_fleet_now(world)).items():
        chain = certificates(data["cert-chain.pem"])
        assert chain[0].issuer == inter.subject, cluster
        assert chain[1] == inter, cluster
    # The canary alone first: its bounce ended before anyone else's began.
    windows = await bounce_windows(world.stack, since=run.since)
    canary = next(w for w in windows if w.cluster == "west")
    assert canary.end is not None
    assert all(canary.end <= w.start for w in windows if w.cluster != "west"), windows
