"""The bouncer's /metrics and readiness, scraped over HTTP from the bouncer run on a real
nats-server and the emulator with its workload controller."""

from __future__ import annotations

import datetime as dt

from devstack.kubeapi import KubeAPI
from devstack.natsserver import NatsServer
from shared.bus import MSG_ID
from shared.events import encode, new_issuance_id
from support.metrics import ready_status, scrape
from support.waiting import eventually

from .conftest import GATEWAYS, ISTIO, Agent, Mesh, running_bouncer, selector

BOUNCES = "meshtrust_bouncer_bounces_total"
DURATION = "meshtrust_bouncer_bounce_duration_seconds"
HANDLED = "meshtrust_bus_messages_handled_total"


async def test_each_bounce_is_counted_once_by_outcome_and_timed(
    mesh: Mesh, agent: Agent, settings: object
) -> None:
    await mesh.install(istiod=1, gateways=1)
    await mesh.directive(selector(ISTIO, "istiod", 1), selector(GATEWAYS, "gateway", 1))
    issuance = new_issuance_id()
    await mesh.certificate(issuance)

    async with running_bouncer(settings) as bouncer:  # type: ignore[arg-type]
        port = bouncer.health.port
        request = await agent.ask(issuance)
        assert (await agent.answer(issuance)).data.error is None
        # A second copy of the same request (a redelivery after a lost ack): answered again
        # from the record, and counted as an answer.
        js = agent.bus.connection.js
        copy = await js.publish(
            "meshtrust.v1.east.bounce.requested",
            encode(request),
            headers={MSG_ID: f"copy-{issuance}"},
        )
        await js.publish("meshtrust.v1.east.bounce.requested", b"{not json")
        missing = await agent.ask(new_issuance_id(), directive="nowhere")
        assert (await agent.answer(missing.issuance)).data.error is not None

        async def all_handled() -> bool:
            info = await js.consumer_info(agent.bus.settings.stream, "bouncer-east")
            return bool(info.ack_floor.stream_seq > copy.seq and info.num_ack_pending == 0)

        await eventually(all_handled, message="every request handled")
        metrics = await scrape(port)

    assert metrics.value(BOUNCES, cluster="east", outcome="completed") == 2.0
    assert metrics.value(BOUNCES, cluster="east", outcome="failed") == 1.0
    assert metrics.value(BOUNCES, cluster="east", outcome="retry") is None
    assert metrics.value(f"{DURATION}_count", cluster="east") == 3.0
    took = metrics.value(f"{DURATION}_sum", cluster="east")
    assert took is not None
    assert 0.0 < took <= 3 * (dt.datetime.now(dt.UTC) - request.time).total_seconds()
    assert metrics.value(HANDLED, durable="bouncer-east", outcome="ack") == 3.0
    assert metrics.value(HANDLED, durable="bouncer-east", outcome="term") == 1.0
    assert metrics.value("meshtrust_bus_messages_in_flight", durable="bouncer-east") == 0.0
    assert issuance not in metrics.label_values()


async def test_readiness_is_false_while_nats_is_down_and_true_after_it_is_back(
    settings: object, nats_server: NatsServer
) -> None:
    async with running_bouncer(settings) as bouncer:  # type: ignore[arg-type]

        async def ready(status: int) -> bool:
            return await ready_status(bouncer.health.port) == status

        await eventually(lambda: ready(200), within=20, message="ready before the outage")
        nats_server.stop()
        await eventually(lambda: ready(503), within=10, message="not ready without NATS")
        nats_server.start()
        await eventually(lambda: ready(200), within=20, message="ready after the reconnect")


async def test_a_delivery_that_fails_transiently_counts_as_a_retry_and_the_answer_once(
    mesh: Mesh, agent: Agent, cluster: KubeAPI, settings: object
) -> None:
    await mesh.install(istiod=1, gateways=1)
    await mesh.directive(selector(ISTIO, "istiod", 1))
    issuance = new_issuance_id()
    await mesh.certificate(issuance)
    # The first two reads of the directive answer 503: two naks before the bounce runs.
    cluster.faults.fail_next(2, status=503, path_contains="/podbouncedirectives/istio-ca")

    async with running_bouncer(settings) as bouncer:  # type: ignore[arg-type]
        stored = await agent.bus.publish(agent.request(issuance))
        assert (await agent.answer(issuance)).data.error is None
        # Scraped once the request is acked: the handler has returned, its figures are in.
        js = agent.bus.connection.js

        async def acked() -> bool:
            info = await js.consumer_info(agent.bus.settings.stream, "bouncer-east")
            return bool(info.ack_floor.stream_seq >= stored.sequence and info.num_ack_pending == 0)

        await eventually(acked, message="the request acked")
        metrics = await scrape(bouncer.health.port)

    assert metrics.value(BOUNCES, cluster="east", outcome="retry") == 2.0
    assert metrics.value(BOUNCES, cluster="east", outcome="completed") == 1.0
    assert metrics.value(f"{DURATION}_count", cluster="east") == 1.0
    assert metrics.value(HANDLED, durable="bouncer-east", outcome="nak") == 2.0
    assert metrics.value("meshtrust_bus_redeliveries_total", durable="bouncer-east") == 2.0
