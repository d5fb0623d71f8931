"""The bouncer against a real nats-server and the emulator with its workload controller: order,
rootCertSync, exactly once per issuance, deadlines, RolloutRestart, bad requests."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest
from structlog.testing import capture_logs

from devstack.kubeapi import KubeAPI
from services.bouncer.policies import RESTARTED_FOR, is_ready, is_terminating
from shared.bus import MSG_ID, NatsSettings
from shared.events import encode, new_issuance_id
from shared.k8s.resources import DEPLOYMENTS, PODS
from support.waiting import eventually

from .conftest import (
    GATEWAYS,
    ISTIO,
    Agent,
    Mesh,
    PodLog,
    deployment,
    make_settings,
    root_cert_sync,
    running_bouncer,
    selector,
)

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("pod_ready_delay", [0.4])
async def test_the_second_selector_is_not_bounced_before_the_first_ones_replacements_are_ready(
    mesh: Mesh, agent: Agent, pod_log: PodLog, settings: object
) -> None:
    await mesh.install(istiod=1, gateways=2)
    await mesh.directive(selector(ISTIO, "istiod", 1), selector(GATEWAYS, "gateway", 2))
    issuance = new_issuance_id()
    await mesh.certificate(issuance)
    istiod_before = await mesh.names(ISTIO, "istiod")
    gateways_before = await mesh.names(GATEWAYS, "gateway")

    async with running_bouncer(settings) as bouncer:  # type: ignore[arg-type]
        await agent.ask(issuance)
        answer = await agent.answer(issuance)
        async with aiohttp.ClientSession() as http:
            port = bouncer.health.port
            async with http.get(f"http://127.0.0.1:{port}/readyz") as response:
                assert response.status == 200

    assert answer.data.error is None
    assert answer.source == "bouncer/east-0"
    assert [(s.index, set(s.pods)) for s in answer.data.selectors] == [
        (0, istiod_before),
        (1, gateways_before),
    ]
    status = await mesh.status()
    assert status["issuanceId"] == issuance
    assert [set(entry["bouncedPods"]) for entry in status["podsBounced"]] == [
        istiod_before,
        gateways_before,
    ]
    # The order, as one watch saw it: every istiod pod deleted, then a replacement Ready,
    # then (only then) the first gateway pod deleted.
    events = pod_log.events
    first_gateway_delete = next(
        i for i, (kind, ns, _, _) in enumerate(events) if kind == "DELETING" and ns == GATEWAYS
    )
    replacement_ready = next(
        i
        for i, (_, ns, name, ready) in enumerate(events)
        if ns == ISTIO and ready and name not in istiod_before
    )
    assert set(pod_log.deleted(ISTIO)) == istiod_before
    assert replacement_ready < first_gateway_delete
    assert all(
        i < first_gateway_delete
        for i, (kind, ns, _, _) in enumerate(events)
        if kind == "DELETING" and ns == ISTIO
    )
    assert set(pod_log.deleted(GATEWAYS)) == gateways_before


async def test_root_cert_sync_holds_the_selector_back_until_the_config_map_matches(
    mesh: Mesh, agent: Agent, pod_log: PodLog, settings: object
) -> None:
    await mesh.install(istiod=1, gateways=2)
    await mesh.directive(
        selector(ISTIO, "istiod", 1),
        selector(GATEWAYS, "gateway", 2, rootCertSync=root_cert_sync()),
    )
    issuance = new_issuance_id()
    await mesh.certificate(issuance)
    gateways_before = await mesh.names(GATEWAYS, "gateway")

    async with running_bouncer(settings):  # type: ignore[arg-type]
        await agent.ask(issuance)
        # istiod bounced and recorded, and the bouncer now watches the root ConfigMap ...
        await eventually(
            lambda: mesh.bouncer_watches("/configmaps", GATEWAYS), message="the sync wait"
        )
        assert len((await mesh.status())["podsBounced"]) == 1
        # ... while the gateways keep running on the old root.
        assert pod_log.deleted(GATEWAYS) == []
        assert await mesh.names(GATEWAYS, "gateway") == gateways_before
        assert agent.completed == []
        await mesh.sync_root()
        answer = await agent.answer(issuance)

    assert answer.data.error is None
    assert set(answer.data.selectors[1].pods) == gateways_before
    assert set(pod_log.deleted(GATEWAYS)) == gateways_before


async def test_a_killed_bouncer_resumes_without_bouncing_the_first_selector_again(
    mesh: Mesh, agent: Agent, pod_log: PodLog, settings: object
) -> None:
    await mesh.install(istiod=1, gateways=2)
    await mesh.directive(
        selector(ISTIO, "istiod", 1),
        selector(GATEWAYS, "gateway", 2, rootCertSync=root_cert_sync()),
    )
    issuance = new_issuance_id()
    await mesh.certificate(issuance)
    istiod_before = await mesh.names(ISTIO, "istiod")

    async with running_bouncer(settings) as first:  # type: ignore[arg-type]
        await agent.ask(issuance)
        await eventually(
            lambda: mesh.bouncer_watches("/configmaps", GATEWAYS), message="the sync wait"
        )
        first.task.cancel()  # killed while it waits on the second selector
    assert first.task.cancelled()
    recorded = (await mesh.status())["podsBounced"]
    assert [set(e["bouncedPods"]) for e in recorded] == [istiod_before]
    replacements = await mesh.names(ISTIO, "istiod")
    assert replacements.isdisjoint(istiod_before)
    await eventually(lambda: not mesh.bouncer_watches("/configmaps", GATEWAYS))
    assert agent.completed == []

    await mesh.sync_root()
    async with running_bouncer(settings):  # type: ignore[arg-type]  # same durable, same cluster
        answer = await agent.answer(issuance)

    assert answer.data.error is None
    assert set(answer.data.selectors[0].pods) == istiod_before
    # The replacements made before the kill are still there: nothing in istio-system was
    # deleted again, and every istiod pod was deleted exactly once.
    assert await mesh.names(ISTIO, "istiod") == replacements
    assert sorted(pod_log.deleted(ISTIO)) == sorted(istiod_before)
    assert len((await mesh.status())["podsBounced"]) == 2


async def test_a_redelivered_request_deletes_nothing_and_a_new_issuance_bounces_again(
    mesh: Mesh, agent: Agent, pod_log: PodLog, settings: object
) -> None:
    await mesh.install(istiod=1, gateways=2)
    await mesh.directive(selector(ISTIO, "istiod", 1), selector(GATEWAYS, "gateway", 2))
    first_issuance = new_issuance_id()
    await mesh.certificate(first_issuance)

    async with running_bouncer(settings):  # type: ignore[arg-type]
        request = await agent.ask(first_issuance)
        first = await agent.answer(first_issuance)
        assert first.data.error is None
        deleted_once = list(pod_log.deleted())
        recorded = await mesh.status()
        istiod_now = await mesh.names(ISTIO, "istiod")
        gateways_now = await mesh.names(GATEWAYS, "gateway")

        # The same request again, as a redelivery after a lost ack brings it: a second copy
        # in the stream (its own Msg-Id, so JetStream's dedupe does not drop it).
        js = agent.bus.connection.js
        ack = await js.publish(
            "meshtrust.v1.east.bounce.requested",
            encode(request),
            headers={MSG_ID: f"redelivery-{first_issuance}"},
        )

        async def handled() -> bool:
            info = await js.consumer_info(agent.bus.settings.stream, "bouncer-east")
            return bool(info.ack_floor.stream_seq >= ack.seq and info.num_ack_pending == 0)

        await eventually(handled, message="the copy handled and acked")
        assert pod_log.deleted() == deleted_once
        assert await mesh.status() == recorded
        assert await mesh.names(ISTIO, "istiod") == istiod_now

        # A new issuance bounces every selector again, the current pods this time.
        second_issuance = new_issuance_id()
        await mesh.certificate(second_issuance)
        await agent.ask(second_issuance)
        second = await agent.answer(second_issuance)

    assert second.data.error is None
    assert [set(s.pods) for s in second.data.selectors] == [istiod_now, gateways_now]
    status = await mesh.status()
    assert status["issuanceId"] == second_issuance
    assert [set(e["bouncedPods"]) for e in status["podsBounced"]] == [istiod_now, gateways_now]
    assert sorted(pod_log.deleted()) == sorted([*deleted_once, *istiod_now, *gateways_now])


@pytest.mark.parametrize("pod_termination_delay", [None])
async def test_bounced_pods_still_terminating_are_neither_replacements_nor_bounced_again(
    mesh: Mesh, agent: Agent, pod_log: PodLog, cluster: KubeAPI, settings: object
) -> None:
    # Every deleted pod stays Terminating (and Ready, as its containers stop) for its whole
    # 30 s grace period, as on a cluster whose workloads take their time to stop.
    await mesh.install(istiod=1, gateways=2)
    await mesh.directive(selector(ISTIO, "istiod", 1), selector(GATEWAYS, "gateway", 2))
    first, second = new_issuance_id(), new_issuance_id()
    await mesh.certificate(first)
    istiod_before = await mesh.names(ISTIO, "istiod")
    gateways_before = await mesh.names(GATEWAYS, "gateway")

    async with running_bouncer(settings):  # type: ignore[arg-type]
        await agent.ask(first)
        answer = await agent.answer(first)
        assert answer.data.error is None
        lingering = await mesh.kube.list(PODS, namespace=GATEWAYS)
        terminating = {p["metadata"]["name"] for p in lingering.items if is_terminating(p)}
        assert terminating == gateways_before
        assert all(is_ready(p) for p in lingering.items)
        replacements = await mesh.names(GATEWAYS, "gateway")
        assert len(replacements) == 2
        assert replacements.isdisjoint(gateways_before)

        await mesh.certificate(second)
        await agent.ask(second)
        again = await agent.answer(second)

    assert again.data.error is None
    assert [set(s.pods) for s in again.data.selectors][1] == replacements
    assert sorted(pod_log.deleted(GATEWAYS)) == sorted([*gateways_before, *replacements])
    assert istiod_before.isdisjoint(await mesh.names(ISTIO, "istiod"))


@pytest.mark.parametrize("pod_ready_delay", [3600.0])
async def test_a_deadline_that_passes_is_answered_with_an_error_naming_the_selector(
    mesh: Mesh, agent: Agent, nats_settings: NatsSettings, cluster: KubeAPI, tmp_path: Path
) -> None:
    # Pods never turn Ready in this cluster: the replacements will not either.
    await mesh.install(istiod=0, gateways=0)
    await mesh.kube.create(DEPLOYMENTS, deployment("istiod", ISTIO, 1))
    await eventually(lambda: mesh.names(ISTIO, "istiod"), message="the istiod pod")
    istiod_before = await mesh.names(ISTIO, "istiod")
    await mesh.directive(selector(ISTIO, "istiod", 1), selector(GATEWAYS, "gateway", 2))
    issuance = new_issuance_id()
    await mesh.certificate(issuance)
    settings = make_settings(
        nats_settings, cluster.write_kubeconfig(tmp_path / "kubeconfig"), replicas_timeout=1.0
    )

    async with running_bouncer(settings):
        await agent.ask(issuance)
        answer = await agent.answer(issuance)

    error = answer.data.error
    assert error is not None
    assert "selector 0 (namespace istio-system, labels app=istiod)" in error
    assert "0 of 1 Ready replacement pod" in error
    assert "after 1 s" in error
    # What was done is reported and recorded; the gateways were never touched.
    assert [(s.index, set(s.pods)) for s in answer.data.selectors] == [(0, istiod_before)]
    assert len((await mesh.status())["podsBounced"]) == 1


@pytest.mark.parametrize("pod_ready_delay", [0.2])
async def test_rollout_restart_rolls_the_deployment_without_deleting_pods_itself(
    mesh: Mesh, agent: Agent, pod_log: PodLog, cluster: KubeAPI, settings: object
) -> None:
    await mesh.install(istiod=0, gateways=2)
    await mesh.directive(selector(GATEWAYS, "gateway", 2, strategy="RolloutRestart"))
    issuance = new_issuance_id()
    await mesh.certificate(issuance)
    before = await mesh.names(GATEWAYS, "gateway")
    seen_before = len(pod_log.created)
    # Any pod deletion through the API fails from now on: a bouncer that deleted pods itself
    # could not succeed. The workload controller inside the emulator is not affected.
    cluster.faults.fail_next(10_000, status=500, path_contains="/pods/")
    try:
        async with running_bouncer(settings):  # type: ignore[arg-type]
            await agent.ask(issuance)
            answer = await agent.answer(issuance)
    finally:
        cluster.faults.clear()

    assert answer.data.error is None
    assert [(s.index, set(s.pods)) for s in answer.data.selectors] == [(0, before)]
    gateway = await mesh.kube.get(DEPLOYMENTS, "gateway", namespace=GATEWAYS)
    annotations = gateway["spec"]["template"]["metadata"]["annotations"]
    assert annotations[RESTARTED_FOR] == issuance
    assert "kubectl.kubernetes.io/restartedAt" in annotations
    after = await mesh.pods(GATEWAYS, "gateway")
    assert len(after) == 2
    assert all(is_ready(p) for p in after)
    assert {p["metadata"]["name"] for p in after}.isdisjoint(before)
    # Every pod created since came from the restarted template: had the bouncer deleted pods,
    # the old ReplicaSet would have replaced them with pods of the old template.
    new = pod_log.created[seen_before:]
    assert len(new) == 2
    assert {annotation for _, _, annotation in new} == {issuance}


async def test_a_missing_or_malformed_directive_or_request_is_answered_not_a_crash(
    mesh: Mesh, agent: Agent, pod_log: PodLog, settings: object
) -> None:
    await mesh.install(istiod=1, gateways=2)
    await mesh.directive(
        selector(ISTIO, "istiod", 1),
        {"namespace": GATEWAYS, "labels": {"app": "not a label!"}},
        name="broken",
    )
    issuance = new_issuance_id()
    await mesh.certificate(issuance)

    async with running_bouncer(settings) as bouncer:  # type: ignore[arg-type]
        # Not even an event: terminated by the consumer, and the bouncer goes on.
        js = agent.bus.connection.js
        await js.publish("meshtrust.v1.east.bounce.requested", b"{not json")
        missing = await agent.ask(issuance, directive="nowhere")
        answer = await agent.answer(missing.issuance)
        assert answer.data.error == (
            "PodBounceDirective istio-system/nowhere not found (waited 1 s for it)"
        )
        assert answer.data.selectors == ()

        # A directive the bouncer cannot use is refused whole: selector 0 is not bounced.
        other = new_issuance_id()
        await mesh.certificate(other)
        await agent.ask(other, directive="broken")
        refused = await agent.answer(other)
        assert not bouncer.task.done()

    error = refused.data.error
    assert error is not None
    assert error.startswith("PodBounceDirective istio-system/broken is malformed: ")
    assert "spec.podsToBounce[1].labels: label app='not a label!'" in error
    assert pod_log.deleted() == []


async def test_a_directive_created_after_its_bounce_request_is_waited_for_and_bounced(
    mesh: Mesh, agent: Agent, nats_settings: NatsSettings, cluster: KubeAPI, tmp_path: Path
) -> None:
    """The agent applies the IssuedCertificate and its PodBounceDirective one by one: under
    load the bounce is asked for before the directive exists (seen at 1,000 clusters). It is
    waited for, not failed (a failure costs a new key, a second signature and a second bounce)."""
    await mesh.install(istiod=1)
    issuance = new_issuance_id()
    await mesh.certificate(issuance)
    before = await mesh.names(ISTIO, "istiod")
    kubeconfig = cluster.write_kubeconfig(tmp_path / "late.kubeconfig")
    settings = make_settings(nats_settings, kubeconfig, directive_timeout=60.0)
    with capture_logs() as logs:
        async with running_bouncer(settings):
            await agent.ask(issuance)
            await eventually(
                lambda: any(e["event"] == "bounce.waiting_for_directive" for e in logs),
                within=20,
                message="the bouncer found no directive and waits for it",
            )
            await mesh.directive(selector(ISTIO, "istiod", 1))
            answer = await agent.answer(issuance, within=60)
    assert answer.data.error is None
    assert [(s.index, set(s.pods)) for s in answer.data.selectors] == [(0, before)]


async def test_a_superseded_issuance_is_refused_and_a_failed_delete_is_retried(
    mesh: Mesh, agent: Agent, pod_log: PodLog, cluster: KubeAPI, settings: object
) -> None:
    await mesh.install(istiod=1, gateways=2)
    await mesh.directive(selector(ISTIO, "istiod", 1), selector(GATEWAYS, "gateway", 2))
    old, current = new_issuance_id(), new_issuance_id()
    await mesh.certificate(current)
    gateways_before = sorted(await mesh.names(GATEWAYS, "gateway"))
    victim = gateways_before[0]
    cluster.faults.fail_next(1, status=500, path_contains=f"/pods/{victim}")

    async with running_bouncer(settings):  # type: ignore[arg-type]
        await agent.ask(old)
        stale = await agent.answer(old)
        assert stale.data.error is not None
        assert f"issuance {old} was superseded by {current}" in stale.data.error
        assert pod_log.deleted() == []

        await agent.ask(current)
        answer = await agent.answer(current)

    assert answer.data.error is None
    # The first DELETE of `victim` failed; it was retried, and recorded once it went.
    assert sorted(answer.data.selectors[1].pods) == gateways_before
    assert pod_log.deleted(GATEWAYS).count(victim) == 1


async def test_an_unwell_api_server_makes_the_request_come_back_and_resume(
    mesh: Mesh, agent: Agent, pod_log: PodLog, cluster: KubeAPI, settings: object
) -> None:
    await mesh.install(istiod=1, gateways=2)
    await mesh.directive(selector(ISTIO, "istiod", 1), selector(GATEWAYS, "gateway", 2))
    issuance = new_issuance_id()
    await mesh.certificate(issuance)
    istiod_before = await mesh.names(ISTIO, "istiod")
    # The first reads of the directive answer 503: the request is naked, not answered.
    cluster.faults.fail_next(3, status=503, path_contains="/podbouncedirectives/istio-ca")

    with capture_logs() as logs:
        async with running_bouncer(settings):  # type: ignore[arg-type]
            await agent.ask(issuance)
            answer = await agent.answer(issuance)

    naks = [e for e in logs if e["event"] == "transient failure, redelivering"]
    assert len(naks) == 3
    assert all("injected fault" in e["error"] or "unable" in e["error"] for e in naks)
    assert answer.data.error is None
    assert len(agent.completed) == 1
    assert set(answer.data.selectors[0].pods) == istiod_before
    assert sorted(pod_log.deleted(ISTIO)) == sorted(istiod_before)


async def test_a_bouncer_killed_while_waiting_for_replacements_never_deletes_them(
    mesh: Mesh, agent: Agent, pod_log: PodLog, settings: object
) -> None:
    await mesh.install(istiod=1, gateways=2)
    # Three Ready gateways are wanted, but the Deployment runs two: the wait cannot end yet.
    await mesh.directive(selector(ISTIO, "istiod", 1), selector(GATEWAYS, "gateway", 3))
    issuance = new_issuance_id()
    await mesh.certificate(issuance)
    gateways_before = await mesh.names(GATEWAYS, "gateway")

    async with running_bouncer(settings) as first:  # type: ignore[arg-type]
        await agent.ask(issuance)

        async def waiting_for_gateways() -> bool:
            recorded = (await mesh.status()).get("podsBounced") or []
            return len(recorded) == 2 and mesh.bouncer_watches("/pods", GATEWAYS)

        await eventually(waiting_for_gateways, message="the wait for gateway replacements")
        first.task.cancel()
    assert set(pod_log.deleted(GATEWAYS)) == gateways_before
    replacements = await mesh.names(GATEWAYS, "gateway")
    assert replacements.isdisjoint(gateways_before)

    await mesh.kube.patch_merge(
        DEPLOYMENTS, "gateway", {"spec": {"replicas": 3}}, namespace=GATEWAYS
    )
    async with running_bouncer(settings):  # type: ignore[arg-type]
        answer = await agent.answer(issuance)

    assert answer.data.error is None
    assert set(answer.data.selectors[1].pods) == gateways_before
    assert sorted(pod_log.deleted(GATEWAYS)) == sorted(gateways_before)
    assert replacements <= await mesh.names(GATEWAYS, "gateway")


async def test_a_directive_without_selectors_is_answered_at_once_and_recorded(
    mesh: Mesh, agent: Agent, settings: object
) -> None:
    await mesh.install(istiod=0, gateways=0)
    await mesh.directive()
    issuance = new_issuance_id()
    await mesh.certificate(issuance)
    async with running_bouncer(settings):  # type: ignore[arg-type]
        await agent.ask(issuance)
        answer = await agent.answer(issuance)
    assert answer.data.error is None
    assert answer.data.selectors == ()
    assert (await mesh.status()).get("issuanceId") == issuance
