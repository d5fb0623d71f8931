"""Fleet-wide re-issues in waves (services/issuer/waves.py): the gate as a table, then over a
real nats-server and the emulated management cluster, a new signing intermediate reaching three
clusters one at a time, each only after the previous one reported FINISHED, and a rotation's
step reaching a cluster those waves hold back."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from issuer.issuer_testing import (
    SYSTEM_NAMESPACE,
    Hierarchy,
    World,
    declaration,
    make_ca,
    running,
    secret_body,
    world,
)
from issuer.test_rotation_controller import NEW_SECRET, epoch_in_desired, rotation_body
from services.issuer.rotating import CERTIFICATE_ROTATIONS
from services.issuer.waves import ReissueWaves, is_reissue
from shared.api.meta import ObjectKey
from shared.bus import NatsSettings
from shared.events import (
    DesiredKind,
    DesiredObject,
)
from shared.k8s.resources import ISSUED_CERTIFICATES, NAMESPACES, SECRETS
from support.waiting import eventually

T0 = dt.datetime(2026, 12, 7, 12, 0, tzinfo=dt.UTC)
FP_A, FP_B = "a" * 64, "b" * 64


def desired(
    generation: int = 1, fingerprint: str = FP_A, epoch: str | None = None
) -> DesiredObject:
    return DesiredObject(
        cluster="east",
        kind=DesiredKind.ISSUED_CERTIFICATE,
        name="istiod",
        namespace="istio-system",
        uid="uid-1",
        generation=generation,
        spec={},
        signing_chain_fingerprint=fingerprint,
        trust_epoch=epoch,
    )


ISSUED = {"state": "FINISHED", "serialNumber": "01", "issuanceId": "i-1"}


@pytest.mark.parametrize(
    ("existing", "new", "status", "expected"),
    [
        (None, desired(), ISSUED, False),  # a first publication
        (desired(), desired(), ISSUED, False),  # nothing changes
        (desired(), desired(generation=2), ISSUED, True),  # an edit
        (desired(), desired(fingerprint=FP_B), ISSUED, True),  # a new signing chain
        (desired(), desired(generation=2), {"state": "REQUESTED"}, False),  # never issued yet
        (desired(), desired(generation=2, epoch="r.12345678.add"), ISSUED, False),  # a rotation's
        (desired(epoch="r.12345678.undo"), desired(), ISSUED, True),  # leaving one
    ],
    ids=["first", "same", "edit", "new chain", "not issued", "rotation step", "rotation end"],
)
def test_what_is_a_reissue(
    existing: DesiredObject | None, new: DesiredObject, status: dict[str, Any], expected: bool
) -> None:
    assert is_reissue(existing, new, status) is expected


def obj(cluster: str, state: str, *, issuance: str = "i-1", error: str = "") -> dict[str, Any]:
    return {
        "metadata": {"namespace": cluster, "name": "istiod"},
        "status": {"state": state, "issuanceId": issuance, "serialNumber": "01", "error": error},
    }


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> dt.datetime:
        return self.now


def test_the_gate_admits_up_to_the_limit_then_releases_as_clusters_finish() -> None:
    clock = Clock()
    waves = ReissueWaves(limit=2, clock=clock)
    fleet = {c: obj(c, "FINISHED") for c in ("a", "b", "c", "d")}
    key = {c: ObjectKey(c, "istiod") for c in fleet}
    assert waves.admit(key["a"], fleet["a"]["status"], fleet.values())
    assert waves.admit(key["b"], fleet["b"]["status"], fleet.values())
    # a and b were published but their agents have not reported yet: they hold the slots.
    assert not waves.admit(key["c"], fleet["c"]["status"], fleet.values())
    assert not waves.admit(key["d"], fleet["d"]["status"], fleet.values())
    assert waves.released(fleet.values()) == []
    fleet["a"] = obj("a", "REQUESTED", issuance="i-2")
    assert waves.released(fleet.values()) == []
    fleet["a"] = obj("a", "FINISHED", issuance="i-2")  # a's new issuance is done
    assert waves.released(fleet.values()) == [key["c"]]  # one slot: the first deferred cluster
    assert waves.admit(key["c"], fleet["c"]["status"], fleet.values())
    assert not waves.admit(key["d"], fleet["d"]["status"], fleet.values())


def test_a_cluster_failed_by_its_agent_keeps_its_slot_and_an_issuer_refusal_does_not() -> None:
    waves = ReissueWaves(limit=1, clock=Clock())
    failing = [obj("a", "FAILED", error="UntrustedRoot: ..."), obj("b", "FINISHED")]
    assert not waves.admit(ObjectKey("b", "istiod"), failing[1]["status"], failing)
    refused = [obj("a", "FAILED", error="issuer: the signing Secret is missing"), failing[1]]
    assert waves.admit(ObjectKey("b", "istiod"), refused[1]["status"], refused)


def test_a_busy_clusters_other_declarations_go_with_it_and_no_limit_admits_all() -> None:
    waves = ReissueWaves(limit=1, clock=Clock())
    fleet = [obj("a", "REQUESTED"), obj("b", "FINISHED")]
    assert waves.admit(ObjectKey("a", "second"), {"issuanceId": "x"}, fleet)
    assert not waves.admit(ObjectKey("b", "istiod"), fleet[1]["status"], fleet)
    assert ReissueWaves(limit=0).admit(ObjectKey("b", "istiod"), {}, fleet)


def test_a_publication_never_reported_stops_holding_its_slot_after_the_settle_time() -> None:
    clock = Clock()
    waves = ReissueWaves(limit=1, clock=clock, settle=dt.timedelta(minutes=5))
    fleet = [obj("a", "FINISHED"), obj("b", "FINISHED")]
    assert waves.admit(ObjectKey("a", "istiod"), fleet[0]["status"], fleet)
    assert not waves.admit(ObjectKey("b", "istiod"), fleet[1]["status"], fleet)
    clock.now = T0 + dt.timedelta(minutes=6)
    assert waves.admit(ObjectKey("b", "istiod"), fleet[1]["status"], fleet)


def test_a_deferred_declaration_is_held_until_a_slot_would_take_it() -> None:
    """`holds` lets a deferred declaration's reconcile requeue before reading anything; it
    says yes only to a deferred one, and only while admit would still say no."""
    waves = ReissueWaves(limit=1, clock=Clock())
    fleet = {c: obj(c, "FINISHED") for c in ("a", "b")}
    a, b = ObjectKey("a", "istiod"), ObjectKey("b", "istiod")
    assert not waves.holds(b, fleet.values), "never deferred: reconciled in full"
    assert waves.admit(a, fleet["a"]["status"], fleet.values())
    assert not waves.admit(b, fleet["b"]["status"], fleet.values())
    assert waves.holds(b, fleet.values)
    assert not waves.holds(a, fleet.values)
    fleet["a"] = obj("a", "FINISHED", issuance="i-2")  # a's re-issue is done: a slot is free
    assert not waves.holds(b, fleet.values)
    assert waves.admit(b, fleet["b"]["status"], fleet.values())
    assert not waves.holds(b, fleet.values)
    assert not ReissueWaves(limit=0).holds(b, fleet.values)
    assert not waves.admit(ObjectKey("a", "istiod"), fleet["a"]["status"], fleet.values())
    assert waves.holds(a, fleet.values)
    waves.forget(a)  # a rotation's step reached it
    assert not waves.holds(a, fleet.values)


# --- over the bus and the emulator ------------------------------------------------------------

THREE = ("east", "west", "north")


async def finish(w: World, decl: dict[str, Any], *, generation: int = 1) -> None:
    """The agent's part: a CSR, its certificate, then FINISHED with the serial."""
    cluster = decl["metadata"]["namespace"]
    agent = w.agent(cluster)
    request = await agent.send(agent.request(decl, generation=generation))
    issued = await w.answers.issued(request.issuance)
    await agent.finished(request, issued, generation=generation)

    async def mirrored() -> bool:
        raw = await w.kube.get(ISSUED_CERTIFICATES, "istiod", namespace=cluster)
        return (raw.get("status") or {}).get("serialNumber") == issued.data.serial_number

    await eventually(mirrored, within=20, message=f"{cluster}'s FINISHED mirrored")


async def fingerprints(w: World) -> dict[str, str | None]:
    bucket = await w.bus.bucket("meshtrust-desired")
    found: dict[str, str | None] = {}
    for cluster in THREE:
        entry = await bucket.get(f"{cluster}.issuedcertificates.istiod")
        value = DesiredObject.model_validate_json(entry.value) if entry is not None else None
        found[cluster] = value.signing_chain_fingerprint if value is not None else None
    return found


@asynccontextmanager
async def a_new_intermediate(
    tmp_path: Path, nats_settings: NatsSettings
) -> AsyncIterator[tuple[World, dict[str, dict[str, Any]], dict[str, str | None]]]:
    """Three clusters FINISHED under the issuer (re-issue waves of one), then a new signing
    intermediate (same root) put into their Secret: the world, the declarations, and each
    cluster's signing-chain fingerprint as published before."""
    async with world(tmp_path, nats_settings, levels=2) as w:
        await w.kube.create(
            NAMESPACES, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "north"}}
        )
        decls = {c: await w.create(declaration(c, "istiod")) for c in THREE}
        async with running(w.settings(reissue_wave=1)):
            before = await eventually(
                lambda: _all_published(w), within=20, message="every cluster's desired state"
            )
            for cluster in THREE:
                await finish(w, decls[cluster])
            root = w.hierarchy.root
            await w.put_signing_secret(Hierarchy(root, make_ca("signing intermediate 2", root)))
            yield w, decls, before


async def test_a_new_signing_intermediate_reaches_the_fleet_one_cluster_at_a_time(
    tmp_path: Path, nats_settings: NatsSettings
) -> None:
    async with a_new_intermediate(tmp_path, nats_settings) as (w, decls, before):
        moved: list[str] = []
        for _ in THREE:

            async def one_more() -> list[str] | None:
                now = await fingerprints(w)
                changed = [c for c in THREE if now[c] != before[c]]
                return changed if len(changed) > len(moved) else None

            changed = await eventually(one_more, within=30, message="the next cluster")
            # While the newest cluster has not reported, nobody else was given the change.
            assert len(changed) == len(moved) + 1, (changed, moved)
            (newest,) = set(changed) - set(moved)
            moved.append(newest)
            await finish(w, decls[newest])
        assert sorted(moved) == sorted(THREE)


async def test_a_rotation_step_reaches_a_cluster_the_reissue_waves_hold_back(
    tmp_path: Path, nats_settings: NatsSettings
) -> None:
    """A new intermediate is in waves of one; the first cluster never finishes, so the others
    are deferred. A rotation (its own waves) starts with one of them as canary: its step is
    published at once, not after the ordinary re-issue ahead of it."""
    async with a_new_intermediate(tmp_path, nats_settings) as (w, _, before):

        async def first_moved() -> list[str] | None:
            now = await fingerprints(w)
            return [c for c in THREE if now[c] != before[c]] or None

        (first,) = await eventually(first_moved, within=30, message="the first cluster")
        canary = next(c for c in THREE if c != first)
        root = w.hierarchy.root
        nxt = Hierarchy(root, make_ca("next intermediate", root))
        await w.kube.create(SECRETS, secret_body(NEW_SECRET, SYSTEM_NAMESPACE, nxt.secret_data()))
        await w.kube.create(CERTIFICATE_ROTATIONS, rotation_body(canary=canary))
        await epoch_in_desired(w, ".reissue", canary)
        (third,) = set(THREE) - {first, canary}
        assert (await fingerprints(w))[third] == before[third], "the third still waits"


async def _all_published(w: World) -> dict[str, str | None] | None:
    found = await fingerprints(w)
    return found if all(found.values()) else None
