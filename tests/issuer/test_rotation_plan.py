"""The rotation plan, as tables: phases, waves, the canary, pauses, approval, grace, rollback."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

import pytest

from services.issuer.rotation import (
    DONE,
    FAILED,
    IN_PROGRESS,
    ClusterView,
    Plan,
    plan,
    signing_step,
)
from shared.api.rotations import CertificateRotation, Phase, Step

T0 = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
TIMEOUT = timedelta(minutes=10)
OLD = {"name": "cacerts", "namespace": "meshtrust-system"}
NEW = {"name": "cacerts-2027", "namespace": "meshtrust-system"}


def rotation(status: Mapping[str, object] | None = None, /, **spec: object) -> CertificateRotation:
    return CertificateRotation.from_object(
        {
            "metadata": {"name": "r", "namespace": "meshtrust-system", "uid": "u", "generation": 3},
            "spec": {"signingCertificateSecret": OLD, "newSigningCertificateSecret": NEW, **spec},
            "status": status or {},
        }
    )


def step(
    current: Plan,
    views: Mapping[str, ClusterView],
    *,
    at: datetime,
    intermediate_only: bool = False,
    **spec: object,
) -> Plan:
    again = rotation(current.status.model_dump(mode="json", by_alias=True), **spec)
    return plan(again, views, intermediate_only=intermediate_only, now=at, step_timeout=TIMEOUT)


def start(names: list[str], **spec: object) -> Plan:
    views = dict.fromkeys(names, ClusterView())
    return plan(rotation(**spec), views, intermediate_only=False, now=T0, step_timeout=TIMEOUT)


def done(*names: str, others: tuple[str, ...] = ()) -> dict[str, ClusterView]:
    return {n: ClusterView(done=True, serial="aa") for n in names} | dict.fromkeys(
        others, ClusterView()
    )


def test_a_new_rotation_starts_adding_the_new_root_one_cluster_at_a_time() -> None:
    first = start(["west", "east"])
    assert first.status.phase is Phase.ADDING_NEW_ROOT
    assert first.moves == {"east": Step.ADD}
    assert first.status.observed_generation == 3
    assert first.status.start_time == T0
    lines = {p.name: (p.step, p.state) for p in first.status.clusters}
    assert lines == {"east": (Step.ADD, IN_PROGRESS), "west": (None, "Pending")}
    assert first.requeue_at == T0 + TIMEOUT


def test_the_canary_goes_alone_then_waves_of_wave_size_after_the_previous_finished() -> None:
    names = ["a", "b", "c", "d"]
    first = start(names, canary="c", waveSize=2)
    assert first.moves == {"c": Step.ADD}
    t = T0 + timedelta(seconds=5)
    waiting = step(first, done(others=("a", "b", "c", "d")), at=t, canary="c", waveSize=2)
    assert waiting.moves == {}, "the canary is not done: nobody else moves"
    second = step(first, done("c", others=("a", "b", "d")), at=t, canary="c", waveSize=2)
    assert second.moves == {"a": Step.ADD, "b": Step.ADD}
    half = step(second, done("c", "a", others=("b", "d")), at=t, canary="c", waveSize=2)
    assert half.moves == {}, "a wave must finish before the next starts"
    third = step(second, done("c", "a", "b", others=("d",)), at=t, canary="c", waveSize=2)
    assert third.moves == {"d": Step.ADD}


def test_a_finished_phase_moves_on_and_the_canary_leads_the_next_one_too() -> None:
    first = start(["a", "b"], canary="b", waveSize=5)
    second = step(first, done("b", others=("a",)), at=T0, canary="b", waveSize=5)
    assert second.moves == {"a": Step.ADD}
    moved = step(second, done("a", "b"), at=T0, canary="b", waveSize=5)
    assert moved.status.phase is Phase.PROPAGATING_NEW_INTERMEDIATE
    assert moved.moves == {"b": Step.MOVE}
    assert moved.status.phase_start_time == T0


def test_a_failed_cluster_pauses_the_rotation_with_its_reason_until_it_recovers() -> None:
    first = start(["a", "b"])
    broken = {"a": ClusterView(failed="UntrustedRoot: no pin vouches"), "b": ClusterView()}
    paused = step(first, broken, at=T0)
    assert paused.status.paused
    assert paused.status.error == "cluster a: UntrustedRoot: no pin vouches"
    assert paused.moves == {}
    assert next(p for p in paused.status.clusters if p.name == "a").state == FAILED
    recovered = step(paused, done("a", others=("b",)), at=T0)
    assert not recovered.status.paused
    assert recovered.status.error is None
    assert recovered.moves == {"b": Step.ADD}


def test_a_cluster_not_done_within_the_step_timeout_fails() -> None:
    first = start(["a"])
    late = step(first, done(others=("a",)), at=T0 + TIMEOUT)
    assert late.status.paused
    assert "not done within" in (late.status.error or "")


def test_manual_approval_stops_after_each_phase_until_approved() -> None:
    first = start(["a"], approval="Manual")
    held = step(first, done("a"), at=T0, approval="Manual")
    assert held.status.phase is Phase.ADDING_NEW_ROOT
    assert held.status.awaiting_approval == "PropagatingNewIntermediate"
    assert held.moves == {}
    go = step(held, done("a"), at=T0, approval="Manual", approvedPhase="PropagatingNewIntermediate")
    assert go.status.phase is Phase.PROPAGATING_NEW_INTERMEDIATE
    assert go.status.awaiting_approval is None
    assert go.moves == {"a": Step.MOVE}


def test_the_pause_between_phases_counts_from_the_last_cluster_finishing() -> None:
    first = start(["a"], pauseBetweenPhases="30s")
    finished = T0 + timedelta(seconds=10)
    wait = step(first, done("a"), at=finished, pauseBetweenPhases="30s")
    assert wait.status.phase is Phase.ADDING_NEW_ROOT
    assert wait.requeue_at == finished + timedelta(seconds=30)
    later = step(wait, done("a"), at=finished + timedelta(seconds=30), pauseBetweenPhases="30s")
    assert later.status.phase is Phase.PROPAGATING_NEW_INTERMEDIATE


def run_to_grace(grace: str) -> Plan:
    first = start(["a"], gracePeriod=grace)
    second = step(first, done("a"), at=T0, gracePeriod=grace)
    assert second.moves == {"a": Step.MOVE}
    return step(second, done("a"), at=T0 + timedelta(seconds=1), gracePeriod=grace)


def test_the_grace_period_separates_propagation_from_deleting_the_old_root() -> None:
    waiting = run_to_grace("1h")
    assert waiting.status.phase is Phase.WAITING_GRACE_PERIOD
    assert waiting.requeue_at == T0 + timedelta(hours=1, seconds=1)
    early = step(waiting, done("a"), at=T0 + timedelta(minutes=59), gracePeriod="1h")
    assert early.status.phase is Phase.WAITING_GRACE_PERIOD
    assert early.moves == {}
    late = step(waiting, done("a"), at=T0 + timedelta(hours=2), gracePeriod="1h")
    assert late.status.phase is Phase.DELETING_OLD_ROOT
    assert late.moves == {"a": Step.DROP}
    end = step(late, done("a"), at=T0 + timedelta(hours=3), gracePeriod="1h")
    assert end.status.phase is Phase.SUCCEEDED
    assert end.status.completion_time == T0 + timedelta(hours=3)
    assert step(end, done("a"), at=T0 + timedelta(hours=4)).moves == {}


def test_an_intermediate_only_rotation_has_one_phase_reissuing() -> None:
    views = {"a": ClusterView(), "b": ClusterView()}
    first = plan(rotation(), views, intermediate_only=True, now=T0, step_timeout=TIMEOUT)
    assert first.status.phase is Phase.REISSUING
    assert first.moves == {"a": Step.REISSUE}
    second = step(first, done("a", others=("b",)), at=T0)
    assert second.moves == {"b": Step.REISSUE}
    assert step(second, done("a", "b"), at=T0).status.phase is Phase.SUCCEEDED


def test_abort_from_phase_two_moves_back_then_after_the_grace_undoes_everyone() -> None:
    spec: dict[str, object] = {"waveSize": 2, "gracePeriod": "1h"}
    first = start(["a", "b"], **spec)
    second = step(first, done("a", "b"), at=T0, **spec)
    assert second.moves == {"a": Step.MOVE, "b": Step.MOVE}
    back = step(second, done("a", others=("b",)), at=T0, **spec, abort=True)
    # Both go back to the old CA (keeping both roots), b's move in flight or not.
    assert back.status.phase is Phase.ROLLING_BACK
    assert back.moves == {"a": Step.BACK, "b": Step.BACK}
    waiting = step(back, done("a", others=("b",)), at=T0, **spec, abort=True)
    assert waiting.moves == {}, "undo only once every cluster is back"
    t1 = T0 + timedelta(minutes=5)
    grace = step(back, done("a", "b"), at=t1, **spec, abort=True)
    assert grace.moves == {}, "the new root stays trusted for the grace period"
    assert grace.requeue_at == t1 + timedelta(hours=1)
    undo = step(grace, done("a", "b"), at=t1 + timedelta(hours=1), **spec, abort=True)
    assert undo.moves == {"a": Step.UNDO, "b": Step.UNDO}
    end = step(undo, done("a", "b"), at=t1 + timedelta(hours=2), **spec, abort=True)
    assert end.status.phase is Phase.ROLLED_BACK


def test_an_abort_catching_a_move_in_flight_keeps_to_the_wave_size() -> None:
    # Wave size 1: a moved, b's move in flight when the abort comes. b (bouncing already) goes
    # back first; a only once b is back: never two clusters bouncing at once.
    first = start(["a", "b"])
    adding = step(first, done("a", others=("b",)), at=T0)
    moving = step(adding, done("a", "b"), at=T0)
    assert moving.moves == {"a": Step.MOVE}
    second = step(moving, done("a", others=("b",)), at=T0)
    assert second.moves == {"b": Step.MOVE}
    back = step(second, done("a", others=("b",)), at=T0, abort=True)
    assert back.moves == {"b": Step.BACK}
    then = step(back, done("a", "b"), at=T0, abort=True)
    assert then.moves == {"a": Step.BACK}


def test_abort_in_phase_one_undoes_only_the_clusters_moved() -> None:
    first = start(["a", "b"])
    aborted = step(first, done("a", others=("b",)), at=T0, abort=True)
    assert aborted.status.phase is Phase.ROLLING_BACK
    assert aborted.moves == {"a": Step.UNDO}
    assert step(aborted, done("a", others=("b",)), at=T0, abort=True).status.phase is (
        Phase.ROLLED_BACK
    )


@pytest.mark.parametrize("phase", [Phase.DELETING_OLD_ROOT])
def test_abort_after_deleting_the_old_root_started_is_refused_with_a_status_error(
    phase: Phase,
) -> None:
    late = run_to_grace("0s")
    assert late.status.phase is phase
    refused = step(late, done(others=("a",)), at=T0 + timedelta(seconds=2), abort=True)
    assert refused.status.phase is phase
    assert "abort refused" in (refused.status.error or "")


def test_clusters_progress_records_done_with_serial_and_since() -> None:
    first = start(["a"])
    at = T0 + timedelta(seconds=7)
    seen = step(first, done("a"), at=at, approval="Manual")
    line = seen.status.clusters[0]
    assert (line.state, line.serial_number, line.since) == (DONE, "aa", at)


def test_the_signing_step_of_each_cluster_in_progress_and_after_the_end() -> None:
    lines = [{"name": "a", "step": "move", "state": "Done"}, {"name": "b", "state": "Pending"}]
    running = rotation({"phase": "PropagatingNewIntermediate", "clusters": lines})
    assert (signing_step(running, "a"), signing_step(running, "b")) == (Step.MOVE, None)
    assert signing_step(running, "elsewhere") is None
    fps = {"oldRootFingerprint": "aa", "newRootFingerprint": "bb"}
    done = rotation({"phase": "Succeeded", **fps})
    assert signing_step(done, "b") is Step.DROP
    same = {"oldRootFingerprint": "aa", "newRootFingerprint": "aa"}
    assert signing_step(rotation({"phase": "Succeeded", **same}), "b") is Step.REISSUE
    undone = [{"name": "a", "step": "undo", "state": "Done"}, {"name": "b", "state": "Pending"}]
    back = rotation({"phase": "RolledBack", "clusters": undone})
    assert (signing_step(back, "a"), signing_step(back, "b")) == (Step.UNDO, None)
