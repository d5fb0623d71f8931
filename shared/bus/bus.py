"""The one object a service holds to use the bus.

async with Bus.connect(settings) as bus:
    await bus.provision()
    await bus.publish(event)
    consumer = bus.consumer(ConsumerSettings(...), handler)   # a Component: run(stop)
    desired = await bus.bucket(DESIRED_BUCKET)
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from nats.js.api import ConsumerConfig
from nats.js.kv import KeyValue
from prometheus_client import CollectorRegistry

from shared.bus.completions import records_stream_config
from shared.bus.connection import Connection, open_connection
from shared.bus.consuming import Consumer
from shared.bus.durables import ConsumerSettings, Handler
from shared.bus.kv import Bucket
from shared.bus.metrics import ConsumerMetrics
from shared.bus.provisioning import ensure_kv, ensure_stream, stream_config
from shared.bus.publishing import Published, Publisher
from shared.bus.settings import NatsSettings
from shared.events import DESIRED_BUCKET, Envelope

DEFAULT_BUCKETS: dict[str, str] = {
    DESIRED_BUCKET: "what the management cluster declares, per remote cluster",
}


class Bus:
    def __init__(
        self, connection: Connection, *, registry: CollectorRegistry | None = None
    ) -> None:
        """`registry`: where the consumers' metrics go (`shared.bus.metrics`); a private one,
        scraped by nobody, when none is given (test clients, CLI tools)."""
        self.connection = connection
        self.settings = connection.settings
        self._publisher = Publisher(connection)
        self.metrics = ConsumerMetrics(registry if registry is not None else CollectorRegistry())

    @classmethod
    @asynccontextmanager
    async def connect(
        cls, settings: NatsSettings, *, registry: CollectorRegistry | None = None
    ) -> AsyncIterator[Bus]:
        connection = await open_connection(settings)
        try:
            yield cls(connection, registry=registry)
        finally:
            await connection.close()

    def is_connected(self) -> bool:
        """Connected to NATS now (False while reconnecting): a readiness check."""
        return bool(self.connection.nc.is_connected)

    async def provision(self, buckets: dict[str, str] | None = None) -> None:
        """Create or update the stream and the buckets (idempotent; every replica may run it)."""
        await ensure_stream(self.connection.js, stream_config(self.settings))
        await ensure_stream(self.connection.js, records_stream_config(self.settings))
        for name, description in (buckets or DEFAULT_BUCKETS).items():
            await ensure_kv(
                self.connection.js,
                bucket=name,
                history=5,
                replicas=self.settings.kv_replicas,
                description=description,
            )

    async def publish(self, event: Envelope) -> Published:
        return await self._publisher.publish(event)

    def consumer(self, settings: ConsumerSettings, handler: Handler) -> Consumer:
        return Consumer(self.connection, settings, handler, metrics=self.metrics)

    async def bucket(
        self,
        name: str,
        *,
        description: str = "",
        history: int = 5,
        feed: ConsumerConfig | None = None,
    ) -> Bucket:
        """Open a KV bucket (created when missing and provisioning is on). `feed`: the durable
        consumer its watch reads changes through (`shared.bus.fleet`).

        Without provisioning nothing is asked of JetStream's API, which answers only in the hub
        account: the bucket is opened by name and used by direct gets and publishes."""
        if self.settings.provision:
            kv = await ensure_kv(
                self.connection.js,
                bucket=name,
                history=history,
                replicas=self.settings.kv_replicas,
                description=description or name,
            )
        else:
            kv = KeyValue(
                name=name,
                stream=f"KV_{name}",
                pre=f"$KV.{name}.",
                js=self.connection.js,
                direct=True,
            )
        return Bucket(self.connection, kv, name, feed=feed, provision=self.settings.provision)
