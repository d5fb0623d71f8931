"""What a consumer keeps of its durable on the server, apart from delivering messages: its
timing changed in place, its ack floor noted, its lag published.

- **Timing in place.** A durable made with an older ack wait (or deliveries, or pending bound)
  gets this side's values; where JetStream refuses the whole configuration (a durable re-created
  from a start sequence cannot change its deliver policy) only those fields are changed.
- **Ack floor** (`floor`): read every `info_refresh` where this identity may ask JetStream, for
  `Consumer.resume_sequence`.
- **Lag** (`meshtrust_bus_consumer_pending_messages`): from each delivery's metadata, which needs
  no API request (a cluster's identity may not ask about its durable), and from the consumer's
  info where the identity may ask (which also sees what was published while nothing is fetched).
"""

from __future__ import annotations

import asyncio
import contextlib

import nats.errors
import nats.js.errors
from nats.aio.msg import Msg
from nats.js.api import ConsumerConfig

from shared.bus.connection import Connection
from shared.bus.durables import ConsumerSettings, timing_update
from shared.bus.metrics import ConsumerMetrics
from shared.runtime.concurrency import raise_if_cancelled
from shared.runtime.logging import get_logger

log = get_logger(__name__)


class DurableUpkeep:
    def __init__(
        self,
        connection: Connection,
        settings: ConsumerSettings,
        metrics: ConsumerMetrics | None,
    ) -> None:
        self._connection = connection
        self._settings = settings
        self._metrics = metrics
        self.floor: int | None = None
        """The durable's ack floor as last read from the server (None: never read)."""

    async def update_timing(self, wanted: ConsumerConfig, refused: str | None) -> None:
        """Change the durable's ack wait, deliveries and pending bound to `wanted`'s in place,
        the rest kept as the server has it; `refused`: why the whole update was refused."""
        js, stream = self._connection.js, self._connection.settings.stream
        try:
            info = await js.consumer_info(stream, self._settings.durable)
            update = timing_update(info.config, wanted)
            if update is not None:
                await js.add_consumer(stream, config=update)
                log.info("consumer timing updated in place", durable=self._settings.durable)
        except nats.js.errors.APIError as exc:
            log.warning(
                "consumer not updated; binding to it as it is",
                durable=self._settings.durable,
                error=exc.description or refused,
            )

    async def refresh(self) -> None:
        """Note the durable's ack floor and pending count (where this identity may ask)."""
        if not self._settings.provision:
            return
        try:
            info = await self._connection.js.consumer_info(
                self._connection.settings.stream, self._settings.durable
            )
        except (nats.errors.Error, TimeoutError) as exc:
            log.debug("ack floor not read", error_type=type(exc).__name__)
            return
        floor = info.ack_floor.stream_seq if info.ack_floor is not None else None
        if floor is not None:
            self.floor = floor
        if info.num_pending is not None:
            self.pending(info.num_pending)

    async def run(self) -> None:
        """`refresh` every `info_refresh`, until cancelled; a task of its own, apart from the
        keep-alive: an API answer slow to come must not delay an `in_progress()`."""
        while True:
            await self.refresh()
            raise_if_cancelled()  # nats-py's request may have swallowed it (`refresh` catches)
            await asyncio.sleep(self._settings.info_refresh)

    def pending(self, count: int) -> None:
        """Messages of the durable not yet delivered: its lag."""
        if self._metrics is not None:
            self._metrics.pending.labels(durable=self._settings.durable).set(count)

    def pending_after(self, msgs: list[Msg]) -> None:
        """The lag as the server counted it when it delivered the last of `msgs`."""
        with contextlib.suppress(ValueError):  # not a JetStream delivery: no metadata
            if msgs:
                self.pending(msgs[-1].metadata.num_pending)
