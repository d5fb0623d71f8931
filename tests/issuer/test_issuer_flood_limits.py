"""The streams' sizes a flood would fill, as the issuer exports them: bytes, messages and the
limit of every stream, scraped over HTTP and compared with what JetStream says."""

from __future__ import annotations

from pathlib import Path

from issuer.issuer_testing import world
from issuer.test_issuer_metrics import replica
from shared.bus import NatsSettings
from shared.bus.ledger import Ledger
from shared.events import EventType
from support.events import sample_events
from support.metrics import Scrape, scrape
from support.waiting import eventually

ISSUER_READS = {EventType.CSR_REQUESTED, EventType.STATUS_CHANGED}
STREAMS = (
    "MESHTRUST",
    "MESHTRUST_LEDGER",
    "MESHTRUST_CONSUMED",
    "KV_meshtrust-desired",
    "KV_meshtrust-issued",
)


async def test_the_issuer_exports_every_streams_bytes_messages_and_limit(
    tmp_path: Path, nats_settings: NatsSettings
) -> None:
    async with world(tmp_path, nats_settings) as w:
        # Events the issuer does not consume: its answers and records would change the sizes.
        quiet = [e for e in sample_events("east") if e.type not in ISSUER_READS]
        for event in quiet:
            await w.bus.publish(event)
        js = w.bus.connection.js
        async with replica(w.settings()) as port:
            # Nothing publishes meanwhile (no declarations): the first read is the truth.
            ledger = Ledger(
                w.bus.connection, stream="MESHTRUST_LEDGER", subjects=("meshtrust.ledger.>",)
            )
            assert [e async for e in ledger.read()] == []

            async def read() -> Scrape | None:
                got = await scrape(port)
                seen = [got.value("meshtrust_bus_stream_messages", stream=s) for s in STREAMS]
                return got if None not in seen else None

            metrics = await eventually(read, message="every stream's size exported")
            for stream in STREAMS:
                info = await js.stream_info(stream)
                limit = max(0, info.config.max_bytes or 0)
                assert metrics.value("meshtrust_bus_stream_bytes", stream=stream) == float(
                    info.state.bytes
                ), stream
                assert metrics.value("meshtrust_bus_stream_messages", stream=stream) == float(
                    info.state.messages
                ), stream
                assert metrics.value("meshtrust_bus_stream_max_bytes", stream=stream) == float(
                    limit
                ), stream
        events = metrics.value("meshtrust_bus_stream_messages", stream="MESHTRUST")
        assert events == len(quiet)
        assert metrics.value("meshtrust_bus_stream_max_bytes", stream="MESHTRUST") == float(
            nats_settings.stream_max_bytes
        )
        assert metrics.value("meshtrust_bus_stream_max_bytes", stream="MESHTRUST_LEDGER") == 0.0
