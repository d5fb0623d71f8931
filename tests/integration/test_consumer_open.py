"""A consumer stopped while it still waits for NATS to open its durable returns quietly: a stop
is no failure (it failed the issuer's whole process group when a test stopped the service
while NATS was coming back)."""

from __future__ import annotations

import asyncio

from integration.bus_harness import Recorder, all_events_consumer
from structlog.testing import capture_logs

from devstack.natsserver import NatsServer
from shared.bus import Bus
from support.waiting import eventually


async def test_a_consumer_stopped_before_it_opened_returns_without_an_error(
    bus: Bus, nats_server: NatsServer
) -> None:
    consumer = bus.consumer(all_events_consumer(), Recorder())
    nats_server.stop()
    stop = asyncio.Event()
    with capture_logs() as logs:
        task = asyncio.create_task(consumer.run(stop))
        try:
            await eventually(
                lambda: any(e["event"] == "consumer not open yet, retrying" for e in logs),
                within=15,
                message="the open retried",
            )
            stop.set()
            await asyncio.wait_for(task, timeout=15)  # returns; a BusError would raise here
        finally:
            nats_server.start()
            await eventually(bus.is_connected, within=15, message="the bus back")
    assert any(e["event"] == "consumer stopped before it opened" for e in logs)
