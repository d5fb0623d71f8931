"""The nats-server is killed with SIGKILL mid-stream and restarted on the same port and store."""

from __future__ import annotations

import asyncio

import structlog
from integration.bus_harness import Recorder, all_events_consumer, running
from structlog.testing import capture_logs

from devstack.natsserver import NatsServer
from shared.bus import Bus, Delivery
from shared.events import Event, new_issuance_id
from support.events import sample_events
from support.waiting import eventually

TOTAL = 300
KILL_AT = 100

log = structlog.get_logger()


async def test_nothing_acked_is_lost_or_handled_twice_across_a_server_crash(
    bus: Bus, nats_server: NatsServer
) -> None:
    template = sample_events("east")[0]
    events = [template.model_copy(update={"issuance": new_issuance_id()}) for _ in range(TOTAL)]

    async def record(event: Event, delivery: Delivery) -> None:
        log.info("handled", seq=delivery.stream_sequence, issuance=event.issuance)

    stored: list[str] = []
    killed = asyncio.Event()

    async def publish_all() -> None:
        for index, event in enumerate(events):
            if index == KILL_AT:
                nats_server.kill()
                killed.set()
            await bus.publish(event)  # retries through the outage with the same Msg-Id
            stored.append(event.issuance)

    loop = asyncio.get_running_loop()
    with capture_logs() as logs:
        consumer = bus.consumer(all_events_consumer(ack_wait=2.0), Recorder(record))  # type: ignore[arg-type]
        async with running(consumer):
            async with asyncio.TaskGroup() as group:
                group.create_task(publish_all())
                await killed.wait()
                await loop.run_in_executor(None, nats_server.start)

            def all_handled() -> bool:
                handled = {e["issuance"] for e in logs if e["event"] == "handled"}
                return handled == set(stored)

            await eventually(all_handled, within=60, message="every stored event handled")
    assert len(stored) == TOTAL
    info = await bus.connection.js.stream_info("MESHTRUST")
    assert info.state.messages == TOTAL, "retried publishes were deduplicated, none lost"
    # Walk the log in order: once the server confirmed a message's ack, it is never handled again
    # (a message whose ack was not yet confirmed when the server died may be).
    acked: set[int] = set()
    handled_after_ack = []
    for entry in logs:
        if entry["event"] == "acked":
            acked.add(entry["seq"])
        elif entry["event"] == "handled" and entry["seq"] in acked:
            handled_after_ack.append(entry["seq"])
    assert len(acked) >= TOTAL
    assert handled_after_ack == []
