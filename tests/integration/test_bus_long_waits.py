"""Idle pulls may wait long (a fleet's hub answers every idle pull of every cluster): a stop and
a reconnect still end the wait at once. Every pull here waits an hour; each test's deadline is
far shorter, so a wait that ran its course would fail it."""

from __future__ import annotations

import asyncio

from integration.bus_harness import Recorder, all_events_consumer

from devstack.natsserver import NatsServer
from shared.bus import Bus, KvUpdate, Put, Snapshot
from support.events import sample_events
from support.waiting import eventually

AN_HOUR = 3600.0


async def test_a_stop_ends_a_consumer_waiting_in_a_long_fetch(bus: Bus) -> None:
    recorder = Recorder()
    consumer = bus.consumer(all_events_consumer(fetch_timeout=AN_HOUR), recorder)
    stop = asyncio.Event()
    running = asyncio.create_task(consumer.run(stop))
    event = sample_events("east")[0]
    await bus.publish(event)
    # delivered to the pull that is waiting: a long wait costs no latency
    await eventually(lambda: event in recorder.events, within=20, message="event handled")
    stop.set()
    await asyncio.wait_for(running, timeout=20)


async def test_a_consumer_in_a_long_fetch_gets_what_is_published_after_a_reconnect(
    bus: Bus, nats_server: NatsServer
) -> None:
    """The pull request died with the server; the reconnect ends the wait for it and pulls again."""
    recorder = Recorder()
    consumer = bus.consumer(all_events_consumer(fetch_timeout=AN_HOUR), recorder)
    stop = asyncio.Event()
    running = asyncio.create_task(consumer.run(stop))
    first, second = sample_events("east")[:2]
    await bus.publish(first)
    await eventually(lambda: first in recorder.events, within=20, message="first handled")
    reconnects = bus.connection.reconnects
    nats_server.kill()
    await asyncio.get_running_loop().run_in_executor(None, nats_server.start)
    await eventually(lambda: bus.connection.reconnects > reconnects, within=20)
    await bus.publish(second)
    await eventually(lambda: second in recorder.events, within=30, message="second handled")
    stop.set()
    await asyncio.wait_for(running, timeout=20)


async def test_a_kv_watch_polling_long_sees_a_change_made_after_a_reconnect(
    bus: Bus, nats_server: NatsServer
) -> None:
    bucket = await bus.bucket("meshtrust-desired")
    seen: list[KvUpdate] = []

    async def watch() -> None:
        async for update in bucket.watch("east.>", poll=AN_HOUR):
            seen.append(update)  # noqa: PERF401 - observed live, one by one

    watcher = asyncio.create_task(watch())
    try:
        await eventually(lambda: seen, within=20, message="the first snapshot")
        await bucket.put("east.issuedcertificates.a", b"a1")
        await eventually(lambda: isinstance(seen[-1], Put), within=20, message="a1 seen")
        reconnects = bus.connection.reconnects
        nats_server.kill()
        await asyncio.get_running_loop().run_in_executor(None, nats_server.start)
        await eventually(lambda: bus.connection.reconnects > reconnects, within=20)
        await eventually(
            lambda: isinstance(seen[-1], Snapshot), within=20, message="a fresh snapshot"
        )
        await bucket.put("east.issuedcertificates.b", b"b1")

        def b_seen() -> bool:
            last = seen[-1]
            return isinstance(last, Put) and last.entry.key == "east.issuedcertificates.b"

        await eventually(b_seen, within=20, message="b1 seen after the reconnect")
    finally:
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
