"""Append-only ledgers: no delete, no purge, deduplicated appends, ordered reads."""

from __future__ import annotations

import asyncio

import nats.js.errors
import pytest
from nats.js.api import StreamConfig

from shared.bus import Bus
from shared.bus.ledger import Ledger, LedgerError


def a_ledger(bus: Bus, stream: str = "TEST_LEDGER") -> Ledger:
    return Ledger(bus.connection, stream=stream, subjects=("test.ledger.>",))


async def test_a_ledger_refuses_deleting_and_purging(bus: Bus) -> None:
    ledger = a_ledger(bus)
    await asyncio.gather(ledger.ensure(), a_ledger(bus).ensure())  # two replicas at once
    await ledger.ensure()  # idempotent
    await ledger.check()
    seq = await ledger.append("test.ledger.east", b"first", msg_id="m-1")
    js = bus.connection.js
    with pytest.raises(nats.js.errors.APIError):
        await js.delete_msg("TEST_LEDGER", seq)
    with pytest.raises(nats.js.errors.APIError):
        await js.purge_stream("TEST_LEDGER")
    assert [e.data async for e in ledger.read()] == [b"first"]


async def test_appends_are_deduplicated_by_message_id_and_read_back_in_order(bus: Bus) -> None:
    ledger = a_ledger(bus)
    await ledger.ensure()
    first = await ledger.append("test.ledger.east", b"one", msg_id="m-1")
    again = await ledger.append("test.ledger.east", b"one", msg_id="m-1")
    second = await ledger.append("test.ledger.west", b"two", msg_id="m-2")
    third = await ledger.append("test.ledger.east", b"three", msg_id="m-3")
    assert again == first
    entries = [e async for e in ledger.read()]
    assert [(e.sequence, e.subject, e.data) for e in entries] == [
        (first, "test.ledger.east", b"one"),
        (second, "test.ledger.west", b"two"),
        (third, "test.ledger.east", b"three"),
    ]
    assert all(e.time is not None for e in entries)
    assert [e.data async for e in ledger.read(start=second)] == [b"two", b"three"]
    assert [e.data async for e in ledger.read(subject="test.ledger.east")] == [b"one", b"three"]


async def test_an_empty_ledger_reads_as_nothing(bus: Bus) -> None:
    ledger = a_ledger(bus)
    await ledger.ensure()
    assert [e async for e in ledger.read()] == []


async def test_a_stream_that_allows_deleting_is_no_ledger(bus: Bus) -> None:
    await bus.connection.js.add_stream(
        StreamConfig(name="NOT_A_LEDGER", subjects=["loose.>"], deny_delete=False)
    )
    ledger = Ledger(bus.connection, stream="NOT_A_LEDGER", subjects=("loose.>",))
    with pytest.raises(LedgerError, match="cannot serve as a ledger"):
        await ledger.ensure()
    with pytest.raises(LedgerError, match="does not exist"):
        await a_ledger(bus, "MISSING").check()
