"""The hub's consumer upkeep tries a failed cluster again soon, not only at the next sweep
(`shared.bus.fleet.FleetConsumers`): a consumer the server could not make at once (seen: the
server still removing one just deleted, "error creating store for consumer") is made within
seconds, while the sweep is minutes away."""

from __future__ import annotations

import asyncio

from structlog.testing import capture_logs

from shared.bus import Bus
from shared.bus.fleet import FleetConsumers, agent_consumer
from support.waiting import eventually


async def test_a_cluster_whose_consumers_could_not_be_made_is_tried_again_soon(bus: Bus) -> None:
    js, stream = bus.connection.js, bus.settings.stream
    await js.delete_stream(stream)  # every check of east fails until it is back
    fleet = FleetConsumers(bus.connection, clusters=("east",), sweep_interval=600)
    durable = agent_consumer("east").durable

    async def made() -> bool:
        return durable in [info.name for info in await js.consumers_info(stream)]

    stop = asyncio.Event()
    with capture_logs() as logs:
        async with asyncio.TaskGroup() as group:
            group.create_task(fleet.run(stop))
            try:
                await eventually(
                    lambda: any(e["event"] == "consumer upkeep failed" for e in logs),
                    message="the first check failed",
                )
                await bus.provision()
                await eventually(made, within=15, message="east's consumer made before the sweep")
            finally:
                stop.set()
