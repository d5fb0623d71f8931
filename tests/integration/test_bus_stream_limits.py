"""Stream limits that never drop what is stored: the event stream refuses new events at its
size limit (discard new) and keeps every old one; a stream made by an older version (no limit,
discard old) gets its limit in place, its messages kept; the ledger has no limit at all.

A real nats-server; the events are the sample events of every type.
"""

from __future__ import annotations

import json

import pytest
import structlog
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig

from shared.bus import Bus, NatsSettings
from shared.bus.ledger import Ledger
from shared.bus.publishing import PublishError
from shared.bus.reading import read_stream
from shared.bus.sizes import stream_sizes
from shared.events import STREAM_SUBJECTS, Envelope, new_issuance_id
from support.events import sample_events

LIMIT = 24_000
"""Bytes: room for a few dozen sample events."""


def events(count: int) -> list[Envelope]:
    """`count` distinct events (each its own issuance: no two share a Msg-Id)."""
    made: list[Envelope] = []
    while len(made) < count:
        issuance = new_issuance_id()
        made += [e.model_copy(update={"issuance": issuance}) for e in sample_events("east")]
    return made[:count]


async def stored_issuances(bus: Bus) -> list[str]:
    stored = [m async for m in read_stream(bus.connection, "MESHTRUST", subject=">")]
    return [json.loads(m.data)["issuance"] for m in stored]


async def test_a_stream_at_its_limit_refuses_new_events_and_keeps_every_old_one(
    nats_settings: NatsSettings,
) -> None:
    settings = nats_settings.model_copy(update={"stream_max_bytes": LIMIT})
    async with Bus.connect(settings) as bus:
        await bus.provision()
        accepted: list[Envelope] = []
        with structlog.testing.capture_logs() as logs:
            for event in events(500):
                try:
                    await bus.publish(event)
                except PublishError as exc:
                    refused = exc
                    break
                accepted.append(event)
            else:
                pytest.fail("the stream took 500 events within its limit")
        assert "at its size limit" in refused.message
        assert "MESHTRUST_NATS_STREAM_MAX_BYTES" in refused.message
        assert any(e["event"] == "stream full: event refused" for e in logs), logs

        info = await bus.connection.js.stream_info("MESHTRUST")
        assert info.config.discard == DiscardPolicy.NEW
        assert info.config.max_bytes == LIMIT
        assert info.state.first_seq == 1, "nothing old was dropped to make room"
        assert info.state.messages == len(accepted) > 10
        assert await stored_issuances(bus) == [e.issuance for e in accepted]
        (size,) = await stream_sizes(bus.connection, ["MESHTRUST"])
        assert (size.bytes, size.messages, size.max_bytes) == (
            info.state.bytes,
            len(accepted),
            LIMIT,
        )


def older_stream_config(settings: NatsSettings) -> StreamConfig:
    """MESHTRUST as an older version made it: no size limit, discard old."""
    return StreamConfig(
        name=settings.stream,
        description="meshtrust events; also the audit log",
        subjects=[STREAM_SUBJECTS],
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        discard=DiscardPolicy.OLD,
        num_replicas=1,
        duplicate_window=settings.duplicate_window,
        max_age=settings.stream_max_age_days * 86_400,
        allow_direct=True,
    )


@pytest.mark.parametrize(
    ("limit", "room_left"),
    [(1024**2, True), (LIMIT // 2, False)],
    ids=["a limit above what it holds", "a limit below what it holds"],
)
async def test_a_stream_made_by_an_older_version_gets_its_limit_in_place_and_keeps_its_events(
    nats_settings: NatsSettings, limit: int, room_left: bool
) -> None:
    async with Bus.connect(nats_settings) as old:
        await old.connection.js.add_stream(older_stream_config(nats_settings))
        before = events(40)
        for event in before:
            await old.publish(event)
        held = (await old.connection.js.stream_info("MESHTRUST")).state.bytes
        assert (held > limit) is not room_left

    settings = nats_settings.model_copy(update={"stream_max_bytes": limit})
    async with Bus.connect(settings) as bus:
        await bus.provision()  # what every replica does at start
        info = await bus.connection.js.stream_info("MESHTRUST")
        assert (info.config.discard, info.config.max_bytes) == (DiscardPolicy.NEW, limit)
        assert (info.state.first_seq, info.state.messages) == (1, len(before))
        assert await stored_issuances(bus) == [e.issuance for e in before]
        if room_left:
            await bus.publish(events(1)[0])
        else:
            with pytest.raises(PublishError, match="at its size limit"):
                await bus.publish(events(1)[0])
        assert (await bus.connection.js.stream_info("MESHTRUST")).state.first_seq == 1


async def test_no_limit_is_the_old_unlimited_stream(nats_settings: NatsSettings) -> None:
    settings = nats_settings.model_copy(update={"stream_max_bytes": 0})
    async with Bus.connect(settings) as bus:
        await bus.provision()
        config = (await bus.connection.js.stream_info("MESHTRUST")).config
        assert (config.discard, config.max_bytes) == (DiscardPolicy.NEW, -1)
        (size,) = await stream_sizes(bus.connection, ["MESHTRUST", "NO_SUCH_STREAM"])
        assert size.max_bytes == 0


async def test_the_ledger_has_no_limit_and_never_discards(bus: Bus) -> None:
    ledger = Ledger(bus.connection, stream="MESHTRUST_LEDGER", subjects=("meshtrust.ledger.>",))
    await ledger.ensure()
    config = (await bus.connection.js.stream_info("MESHTRUST_LEDGER")).config
    assert config.discard == DiscardPolicy.NEW
    assert (config.max_bytes, config.max_msgs, config.max_age) == (-1, -1, 0)
    assert (config.deny_delete, config.deny_purge) == (True, True)
