"""A CertificateRotation's `clusterSelector` over a real nats-server and the emulated management
cluster: only the clusters whose ClusterRegistration's labels it selects are rotated, a moved
cluster stays in when its labels stop matching, and one that starts matching before it was moved
joins; a moved cluster taken out of `spec.clusters` stays in as well. The agents are played by
test code, as in test_rotation_controller.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from issuer.issuer_testing import (
    SYSTEM_NAMESPACE,
    Hierarchy,
    World,
    declaration,
    running,
    secret_body,
    world,
)
from issuer.test_rotation_controller import (
    NEW_SECRET,
    epoch_in_desired,
    issue_and_finish,
    rotation_body,
    rotation_ended,
    rotation_of,
)
from services.issuer.registrations import CLUSTER_REGISTRATIONS
from services.issuer.rotating import CERTIFICATE_ROTATIONS
from services.issuer.rotation import signing_step, trust_split
from shared.api.rotations import CertificateRotation, Phase, Step
from shared.bus import NatsSettings
from shared.events import DesiredObject
from shared.k8s.resources import ISSUED_CERTIFICATES, NAMESPACES, SECRETS
from support.waiting import eventually

PROD = {"matchLabels": {"env": "prod"}}


def registration(cluster: str, **labels: str) -> dict[str, Any]:
    """A ClusterRegistration that bounds nothing (every rule left to the issuer), labelled."""
    return {
        "apiVersion": "certificates.smh.solo.io/v1alpha2",
        "kind": "ClusterRegistration",
        "metadata": {"name": cluster, "namespace": SYSTEM_NAMESPACE, "labels": labels},
        "spec": {},
    }


async def relabel(w: World, cluster: str, **labels: str) -> None:
    raw = await w.kube.get(CLUSTER_REGISTRATIONS, cluster, namespace=SYSTEM_NAMESPACE)
    raw["metadata"]["labels"] = labels
    await w.kube.replace(CLUSTER_REGISTRATIONS, raw)


async def desired(w: World, cluster: str) -> DesiredObject | None:
    bucket = await w.bus.bucket("meshtrust-desired")
    entry = await bucket.get(f"{cluster}.issuedcertificates.istiod")
    return None if entry is None else DesiredObject.model_validate_json(entry.value)


async def no_epoch(w: World, cluster: str) -> None:
    value = await desired(w, cluster)
    assert value is not None, f"{cluster}'s declaration is published"
    assert value.trust_epoch is None, f"{cluster} is not in the rotation: {value.trust_epoch}"


async def new_root(w: World) -> None:
    """The rotation's new CA: a root of its own, in the Secret `rotation_body` names."""
    new = Hierarchy.make(levels=1)
    await w.kube.create(SECRETS, secret_body(NEW_SECRET, SYSTEM_NAMESPACE, new.secret_data()))


async def phase_reached(w: World, phase: Phase, message: str) -> None:
    async def reached() -> bool:
        return (await rotation_of(w)).status.phase is phase

    await eventually(reached, message=message)


async def members(w: World) -> dict[str, Step | None]:
    return {p.name: p.step for p in (await rotation_of(w)).status.clusters}


async def test_a_selector_rotates_only_the_clusters_it_selects_and_a_moved_one_stays(
    tmp_path: Path, nats_settings: NatsSettings
) -> None:
    async with world(tmp_path, nats_settings, levels=1) as w:
        await new_root(w)
        await w.kube.create(NAMESPACES, {"metadata": {"name": "north"}})
        decls = {c: await w.create(declaration(c, "istiod")) for c in ("east", "north", "west")}
        for cluster, env in (("east", "prod"), ("west", "prod"), ("north", "dev")):
            await w.kube.create(CLUSTER_REGISTRATIONS, registration(cluster, env=env))
        async with running(w.settings()):
            await eventually(lambda: desired(w, "north"), message="north's desired state")
            body = rotation_body(clusterSelector=PROD, allowTrustSplit=True)
            await w.kube.create(CERTIFICATE_ROTATIONS, body)
            await issue_and_finish(w, decls["east"], await epoch_in_desired(w, ".add", "east"))
            # East was moved: its labels stop matching, it stays (its epoch, its next steps).
            await relabel(w, "east", env="retired")
            await issue_and_finish(w, decls["west"], await epoch_in_desired(w, ".add", "west"))
            assert await members(w) == {"east": Step.ADD, "west": Step.ADD}
            await no_epoch(w, "north")
            for step in (".move", ".drop"):
                for cluster in ("east", "west"):
                    epoch = await epoch_in_desired(w, step, cluster)
                    await issue_and_finish(w, decls[cluster], epoch)
                await no_epoch(w, "north")
            done = await rotation_ended(w)
            assert [p.name for p in done.status.clusters] == ["east", "west"]
            assert {p.step for p in done.status.clusters} == {Step.DROP}
            # After Succeeded, a narrowed rotation signs its members only as `drop`: north, never
            # moved, is not cut over to the new root (republished after an edit: still none).
            raw = await w.kube.get(ISSUED_CERTIFICATES, "istiod", namespace="north")
            raw["spec"]["certOptions"]["ttlDays"] = 20
            edited = await w.kube.replace(ISSUED_CERTIFICATES, raw)

            async def republished() -> DesiredObject | None:
                value = await desired(w, "north")
                generation = edited["metadata"]["generation"]
                return value if value is not None and value.generation == generation else None

            await eventually(republished, message="north's edited declaration to be published")
            await no_epoch(w, "north")


async def test_a_root_rotation_that_would_split_trust_pauses_until_it_covers_every_cluster(
    tmp_path: Path, nats_settings: NatsSettings
) -> None:
    """North names the same Secret but is not selected: it would keep only the old root. The
    rotation pauses with TrustSplit, moving no one, until north is taken in."""
    async with world(tmp_path, nats_settings, levels=1) as w:
        await new_root(w)
        await w.kube.create(NAMESPACES, {"metadata": {"name": "north"}})
        for cluster in ("east", "north", "west"):
            await w.create(declaration(cluster, "istiod"))
        for cluster, env in (("east", "prod"), ("west", "prod"), ("north", "dev")):
            await w.kube.create(CLUSTER_REGISTRATIONS, registration(cluster, env=env))
        async with running(w.settings()):
            await eventually(lambda: desired(w, "north"), message="north's desired state")
            await w.kube.create(CERTIFICATE_ROTATIONS, rotation_body(clusterSelector=PROD))

            async def paused() -> CertificateRotation | None:
                rotation = await rotation_of(w)
                return rotation if rotation.status.paused else None

            status = (await eventually(paused, message="the rotation to pause")).status
            assert (status.error or "").startswith("TrustSplit: north name "), status.error
            assert "allowTrustSplit" in (status.error or "")
            assert status.phase is Phase.PENDING
            assert [p.step for p in status.clusters] == []
            for cluster in ("east", "north", "west"):
                await no_epoch(w, cluster)
            await relabel(w, "north", env="prod")
            await epoch_in_desired(w, ".add", "east")
            assert not (await rotation_of(w)).status.paused


async def test_an_empty_selector_takes_registered_clusters_and_one_registered_later_joins(
    tmp_path: Path, nats_settings: NatsSettings
) -> None:
    async with world(tmp_path, nats_settings, levels=1) as w:
        await new_root(w)
        east = await w.create(declaration("east", "istiod"))
        west = await w.create(declaration("west", "istiod"))
        await w.kube.create(CLUSTER_REGISTRATIONS, registration("east"))
        async with running(w.settings()):
            await eventually(lambda: desired(w, "west"), message="west's desired state")
            body = rotation_body(clusterSelector={}, allowTrustSplit=True)
            await w.kube.create(CERTIFICATE_ROTATIONS, body)
            epoch = await epoch_in_desired(w, ".add", "east")
            assert await members(w) == {"east": Step.ADD}, "west has no registration: no labels"
            await no_epoch(w, "west")
            # West is registered before it was moved: it joins, in the next wave.
            await w.kube.create(CLUSTER_REGISTRATIONS, registration("west"))

            async def joined() -> bool:
                return "west" in await members(w)

            await eventually(joined, message="west to join the rotation")
            await issue_and_finish(w, east, epoch)
            await issue_and_finish(w, west, await epoch_in_desired(w, ".add", "west"))
            await phase_reached(w, Phase.PROPAGATING_NEW_INTERMEDIATE, "west's add done")


async def test_a_moved_cluster_taken_out_of_the_list_stays_in(
    tmp_path: Path, nats_settings: NatsSettings
) -> None:
    async with world(tmp_path, nats_settings, levels=1) as w:
        await new_root(w)
        east = await w.create(declaration("east", "istiod"))
        west = await w.create(declaration("west", "istiod"))
        async with running(w.settings()):
            await eventually(lambda: desired(w, "west"), message="west's desired state")
            body = rotation_body(clusters=["east", "west"], canary="east")
            await w.kube.create(CERTIFICATE_ROTATIONS, body)
            epoch = await epoch_in_desired(w, ".add", "east")
            raw = await w.kube.get(CERTIFICATE_ROTATIONS, "to-2027", namespace=SYSTEM_NAMESPACE)
            raw["spec"]["clusters"] = ["west"]
            generation = (await w.kube.replace(CERTIFICATE_ROTATIONS, raw))["metadata"][
                "generation"
            ]

            async def observed() -> bool:
                return (await rotation_of(w)).status.observed_generation >= generation

            await eventually(observed, message="the edited list to be reconciled")
            assert await members(w) == {"east": Step.ADD, "west": None}
            value = await desired(w, "east")
            assert value is not None
            assert value.trust_epoch == epoch, "east keeps its step"
            await issue_and_finish(w, east, epoch)
            await issue_and_finish(w, west, await epoch_in_desired(w, ".add", "west"))
            await phase_reached(w, Phase.PROPAGATING_NEW_INTERMEDIATE, "both clusters' add done")


def narrowed(phase: str, **spec: Any) -> CertificateRotation:
    return CertificateRotation.from_object(
        rotation_body(**spec)
        | {
            "status": {
                "phase": phase,
                "oldRootFingerprint": "aa",
                "newRootFingerprint": "bb",
                "clusters": [{"name": "east", "step": "drop", "state": "Done"}],
            }
        }
    )


def test_after_success_a_narrowed_rotation_signs_only_its_members_as_drop() -> None:
    for spec in ({"clusterSelector": PROD}, {"clusterSelector": {}}, {"clusters": ["east"]}):
        done = narrowed("Succeeded", **spec)
        assert (signing_step(done, "east"), signing_step(done, "north")) == (Step.DROP, None)
    every = narrowed("Succeeded")
    assert (signing_step(every, "east"), signing_step(every, "north")) == (Step.DROP, Step.DROP)
    running_ = narrowed("DeletingOldRoot", clusterSelector=PROD)
    assert (signing_step(running_, "east"), signing_step(running_, "north")) == (Step.DROP, None)


@pytest.mark.parametrize(
    ("phase", "spec", "intermediate_only", "splits"),
    [
        ("AddingNewRoot", {"clusterSelector": PROD}, False, True),
        ("Pending", {"clusters": ["east"]}, False, True),
        ("DeletingOldRoot", {"clusterSelector": PROD}, False, True),
        ("AddingNewRoot", {"clusterSelector": PROD}, True, False),  # the same root
        ("AddingNewRoot", {"clusterSelector": PROD, "allowTrustSplit": True}, False, False),
        ("AddingNewRoot", {"clusterSelector": PROD, "abort": True}, False, False),
        ("RollingBack", {"clusterSelector": PROD}, False, False),
        ("Succeeded", {"clusterSelector": PROD}, False, False),
    ],
)
def test_which_root_rotations_split_trust(
    phase: str, spec: dict[str, Any], intermediate_only: bool, splits: bool
) -> None:
    rotation = narrowed(phase, **spec)
    found = trust_split(rotation, {"east", "north"}, {"east"}, intermediate_only=intermediate_only)
    assert (found is not None) is splits
    if found is not None:
        assert found.reason == "TrustSplit"
        assert found.message.startswith("north name ")
    assert trust_split(rotation, {"east"}, {"east"}, intermediate_only=False) is None


def test_a_split_names_ten_clusters_and_counts_the_rest() -> None:
    outside = {f"c{i:02}" for i in range(13)}
    found = trust_split(
        narrowed("Pending", clusters=["east"]),
        outside | {"east"},
        {"east"},
        intermediate_only=False,
    )
    assert found is not None
    assert found.message.startswith("c00, c01, c02, c03, c04, c05, c06, c07, c08, c09 and 3 more")
