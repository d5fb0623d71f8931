"""KV buckets: compare-and-swap, and a watch that is level-based across reconnects."""

from __future__ import annotations

import asyncio
import json

import nats
import pytest

from devstack.natsserver import NatsServer
from shared.bus import Bus, Deleted, KvUpdate, Put, RevisionMismatch, Snapshot
from shared.runtime import TransientError
from support.waiting import eventually


async def test_update_is_compare_and_swap(bus: Bus) -> None:
    bucket = await bus.bucket("meshtrust-desired")
    first = await bucket.create("east.issuedcertificates.ca", b"v1")
    with pytest.raises(RevisionMismatch):
        await bucket.create("east.issuedcertificates.ca", b"again")
    second = await bucket.update("east.issuedcertificates.ca", b"v2", last=first)
    with pytest.raises(RevisionMismatch):
        await bucket.update("east.issuedcertificates.ca", b"v3", last=first)
    entry = await bucket.get("east.issuedcertificates.ca")
    assert entry is not None
    assert (entry.value, entry.revision) == (b"v2", second)
    await bucket.delete("east.issuedcertificates.ca")
    assert await bucket.get("east.issuedcertificates.ca") is None


async def test_an_empty_value_is_a_value_not_an_absence(bus: Bus) -> None:
    bucket = await bus.bucket("meshtrust-desired")
    await bucket.put("east.issuedcertificates.empty", b"")
    entry = await bucket.get("east.issuedcertificates.empty")
    assert entry is not None
    assert entry.value == b""
    assert "east.issuedcertificates.empty" in await bucket.keys()


async def test_watch_gives_a_snapshot_then_changes_then_a_fresh_snapshot_after_reconnect(
    bus: Bus, nats_server: NatsServer
) -> None:
    bucket = await bus.bucket("meshtrust-desired")
    await bucket.put("east.issuedcertificates.a", b"a1")
    await bucket.put("east.issuedcertificates.b", b"b1")
    await bucket.put("west.issuedcertificates.a", b"other cluster")
    await bucket.delete("east.issuedcertificates.b")
    seen: list[KvUpdate] = []

    async def watch() -> None:
        async for update in bucket.watch("east.>", poll=0.1):
            seen.append(update)  # noqa: PERF401 - observed live, one by one

    async with asyncio.TaskGroup() as group:
        watcher = group.create_task(watch())
        await eventually(lambda: len(seen) >= 1)
        assert isinstance(seen[0], Snapshot)
        assert {k: e.value for k, e in seen[0].entries.items()} == {
            "east.issuedcertificates.a": b"a1"
        }
        await bucket.put("east.issuedcertificates.c", b"c1")
        await bucket.delete("east.issuedcertificates.a")
        await bucket.put("west.issuedcertificates.z", b"not ours")
        await eventually(lambda: len(seen) >= 3)
        assert isinstance(seen[1], Put)
        assert seen[1].entry.key == "east.issuedcertificates.c"
        assert isinstance(seen[2], Deleted)
        assert seen[2].key == "east.issuedcertificates.a"

        nats_server.kill()
        await asyncio.get_running_loop().run_in_executor(None, nats_server.start)
        await eventually(lambda: isinstance(seen[-1], Snapshot) and len(seen) > 3, within=20)
        fresh = seen[-1]
        assert isinstance(fresh, Snapshot)
        assert set(fresh.entries) == {"east.issuedcertificates.c"}
        await bucket.put("east.issuedcertificates.d", b"d1")
        await eventually(lambda: isinstance(seen[-1], Put) and seen[-1].entry.key.endswith(".d"))
        watcher.cancel()


async def test_kv_calls_during_an_outage_raise_transient_errors(
    bus: Bus, nats_server: NatsServer
) -> None:
    bucket = await bus.bucket("meshtrust-desired")
    await bucket.put("east.issuedcertificates.ca", b"v1")
    nats_server.kill()
    await eventually(lambda: not bus.connection.nc.is_connected, message="client noticed")
    for call in (
        bucket.get("east.issuedcertificates.ca"),
        bucket.put("east.issuedcertificates.ca", b"v2"),
        bucket.update("east.issuedcertificates.ca", b"v2", last=1),
        bucket.delete("east.issuedcertificates.ca"),
    ):
        with pytest.raises(TransientError, match=r"meshtrust-desired/east\.issuedcertificates\.ca"):
            await call
    # A write that raised may still land once the client reconnects (nats-py buffers it), so
    # its outcome is unknown: callers are level-based and look again. The bucket works again.
    await asyncio.get_running_loop().run_in_executor(None, nats_server.start)

    async def round_trip() -> bool:
        try:
            await bucket.put("east.issuedcertificates.after", b"v3")
            entry = await bucket.get("east.issuedcertificates.after")
        except TransientError:
            return False
        return entry is not None and entry.value == b"v3"

    await eventually(round_trip, within=20)


async def test_a_quiet_watch_asks_for_one_change_then_batches(bus: Bus) -> None:
    """Pull requests of the watch's cursor as the server sees them: after fetches that found
    nothing it asks for one change (a lone change is not held back behind a late status of an
    earlier request; see shared.bus.kv `_Cursor.next`), after one that found some, for more."""
    bucket = await bus.bucket("meshtrust-desired")
    requests: list[int] = []

    async def seen_request(msg: nats.aio.msg.Msg) -> None:
        requests.append(int(json.loads(msg.data)["batch"]))

    spy = await bus.connection.nc.subscribe(
        "$JS.API.CONSUMER.MSG.NEXT.KV_meshtrust-desired.>", cb=seen_request
    )
    seen: list[KvUpdate] = []

    async def watch() -> None:
        async for update in bucket.watch("east.>", poll=0.1):
            seen.append(update)  # noqa: PERF401 - observed live, one by one

    try:
        async with asyncio.TaskGroup() as group:
            watcher = group.create_task(watch())
            await eventually(lambda: len(seen) >= 1 and len(requests) >= 3)
            assert requests[-1] == 1  # quiet: one at a time
            quiet = len(requests)
            await bucket.put("east.issuedcertificates.a", b"a1")
            await eventually(lambda: len(seen) >= 2)
            assert isinstance(seen[1], Put)
            # the fetch after one that found a change asks for a batch
            await eventually(lambda: any(batch > 1 for batch in requests[quiet:]))
            watcher.cancel()
    finally:
        await spy.unsubscribe()
