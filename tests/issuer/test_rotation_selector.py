"""A CertificateRotation's `clusterSelector` over a real nats-server and the emulated management
cluster: only the clusters whose ClusterRegistration's labels it selects are rotated, a moved
cluster stays in when its labels stop matching, and one that starts matching before it was moved
joins. The agents are played by test code, as in test_rotation_controller.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

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
from services.issuer.rotation import signing_step
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


async def members(w: World) -> dict[str, Step | None]:
    return {p.name: p.step for p in (await rotation_of(w)).status.clusters}


async def test_a_selector_rotates_only_the_clusters_it_selects_and_a_moved_one_stays(
    tmp_path: Path, nats_settings: NatsSettings
) -> None:
    async with world(tmp_path, nats_settings, levels=1) as w:
        new = Hierarchy.make(levels=1)
        await w.kube.create(SECRETS, secret_body(NEW_SECRET, SYSTEM_NAMESPACE, new.secret_data()))
        await w.kube.create(NAMESPACES, {"metadata": {"name": "north"}})
        decls = {c: await w.create(declaration(c, "istiod")) for c in ("east", "north", "west")}
        for cluster, env in (("east", "prod"), ("west", "prod"), ("north", "dev")):
            await w.kube.create(CLUSTER_REGISTRATIONS, registration(cluster, env=env))
        async with running(w.settings()):
            await eventually(lambda: desired(w, "north"), message="north's desired state")
            await w.kube.create(CERTIFICATE_ROTATIONS, rotation_body(clusterSelector=PROD))
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


async def test_an_empty_selector_takes_registered_clusters_and_one_registered_later_joins(
    tmp_path: Path, nats_settings: NatsSettings
) -> None:
    async with world(tmp_path, nats_settings, levels=1) as w:
        new = Hierarchy.make(levels=1)
        await w.kube.create(SECRETS, secret_body(NEW_SECRET, SYSTEM_NAMESPACE, new.secret_data()))
        east = await w.create(declaration("east", "istiod"))
        west = await w.create(declaration("west", "istiod"))
        await w.kube.create(CLUSTER_REGISTRATIONS, registration("east"))
        async with running(w.settings()):
            await eventually(lambda: desired(w, "west"), message="west's desired state")
            await w.kube.create(CERTIFICATE_ROTATIONS, rotation_body(clusterSelector={}))
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

            async def next_phase() -> bool:
                return (await rotation_of(w)).status.phase is Phase.PROPAGATING_NEW_INTERMEDIATE

            await eventually(next_phase, message="the next phase, west's add done")


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
