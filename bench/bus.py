"""Bus benchmark: our publish/consume against a bare nats-py loop, in the same run.

Both sides use the same fresh nats-server (file storage) and the same shape, as deployed: a
publisher process (an agent) publishes sequentially, each publish awaiting its PubAck, while a
consumer process (the issuer) fetches in batches and double-acks. Our side adds what the
services rely on: pydantic encoding and validation, Nats-Msg-Id, bounded concurrency, and the
completion records that keep a server crash from re-running a handler. Printed per side:

- throughput: messages from the publisher's first publish to the consumer's last handled;
- round trip: publish -> handler, one message in flight, p50 and p99.

Rounds alternate raw and ours; the ratios are medians over rounds, since these machines are
noisy: read ratios, not absolute numbers. The last line is `bus/raw throughput ratio: R`.

    .venv/bin/python bench/bus.py [--messages 3000] [--round-trips 300] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import nats
from nats.js.api import AckPolicy, ConsumerConfig, StreamConfig

from devstack.natsserver import NatsServer
from shared.bus import Bus, ConsumerSettings, Delivery, NatsSettings
from shared.events import CsrRequested, CsrRequestedData, Event, new_issuance_id
from shared.runtime import LoggingSettings, configure_logging

CSR = "-----BEGIN CERTIFICATE REQUEST-----\n" + "A" * 900 + "\n-----END CERTIFICATE REQUEST-----\n"
Publish = Callable[[int], Awaitable[None]]


def event() -> CsrRequested:
    return CsrRequested(
        source="agent/east",
        cluster="east",
        issuance=new_issuance_id(),
        data=CsrRequestedData(
            name="istio-ca", declaration_uid="u", declaration_generation=1, csr_pem=CSR
        ),
    )


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


# --- the publishers (also run as a child process: `bus.py --publish raw|bus URL N OFFSET`) ---


async def raw_publisher(url: str) -> tuple[Publish, Callable[[], Awaitable[None]]]:
    nc = await nats.connect(url)
    js = nc.jetstream()
    payload = event().model_dump_json().encode()

    async def publish(i: int) -> None:
        await js.publish("raw.east", payload, headers={"Nats-Msg-Id": f"raw-{i}"})

    return publish, nc.close


async def bus_publisher(url: str) -> tuple[Publish, Callable[[], Awaitable[None]]]:
    connected = Bus.connect(NatsSettings(urls=(url,)))
    bus = await connected.__aenter__()
    # Events are made before the clock starts, as the raw side's payload is: measured is the
    # bus layer (encoding, Msg-Id, retry wrapper, publish), not building the service's event.
    events: dict[int, CsrRequested] = {}

    def prepare(start: int, count: int) -> None:
        events.update((i, event()) for i in range(start, start + count))

    async def publish(i: int) -> None:
        await bus.publish(events.pop(i) if i in events else event())

    publish.prepare = prepare  # type: ignore[attr-defined]

    async def close() -> None:
        await connected.__aexit__(None, None, None)

    return publish, close


PUBLISHERS = {"raw": raw_publisher, "bus": bus_publisher}


async def child(mode: str, url: str, count: int, offset: int) -> None:
    publish, close = await PUBLISHERS[mode](url)
    if hasattr(publish, "prepare"):
        publish.prepare(offset, count)
    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    for i in range(offset, offset + count):
        await publish(i)
    await close()


# --- the consumers ---


class Counter:
    def __init__(self) -> None:
        self.count = 0
        self.changed = asyncio.Event()

    def add(self, n: int) -> None:
        self.count += n
        self.changed.set()

    async def reach(self, target: int) -> None:
        while self.count < target:
            self.changed.clear()
            await self.changed.wait()


async def raw_consumer(url: str, counter: Counter, stop: asyncio.Event) -> None:
    nc = await nats.connect(url)
    js = nc.jetstream()
    sub = await js.pull_subscribe(
        "raw.>", durable="raw", stream="RAW", config=ConsumerConfig(ack_policy=AckPolicy.EXPLICIT)
    )
    while not stop.is_set():
        try:
            msgs = await sub.fetch(64, timeout=0.5)
        except TimeoutError:
            continue
        await asyncio.gather(*(m.ack_sync() for m in msgs))
        counter.add(len(msgs))
    await nc.close()


async def bus_consumer(url: str, counter: Counter, stop: asyncio.Event) -> None:
    async with Bus.connect(NatsSettings(urls=(url,))) as bus:

        async def handler(event: Event, delivery: Delivery) -> None:
            counter.add(1)

        settings = ConsumerSettings(durable="bench", filter_subjects=("meshtrust.v1.>",))
        await bus.consumer(settings, handler).run(stop)


CONSUMERS = {"raw": raw_consumer, "bus": bus_consumer}


async def one_round(
    mode: str, url: str, messages: int, round_trips: int, offset: int
) -> tuple[float, list[float]]:
    counter = Counter()
    stop = asyncio.Event()
    async with asyncio.TaskGroup() as group:
        group.create_task(CONSUMERS[mode](url, counter, stop))
        publish, close = await PUBLISHERS[mode](url)
        latencies = []
        for i in range(offset, offset + round_trips):
            before = counter.count
            start = time.perf_counter()
            await publish(i)
            await counter.reach(before + 1)
            latencies.append((time.perf_counter() - start) * 1000)
        await close()
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            __file__,
            "--publish",
            mode,
            url,
            str(messages),
            str(offset + round_trips),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        assert process.stdin is not None
        assert process.stdout is not None
        await process.stdout.readline()  # ready
        base = counter.count
        start = time.perf_counter()
        process.stdin.write(b"go\n")
        await process.stdin.drain()
        await counter.reach(base + messages)
        elapsed = time.perf_counter() - start
        await process.wait()
        stop.set()
    return messages / elapsed, latencies


async def provision(url: str) -> None:
    nc = await nats.connect(url)
    await nc.jetstream().add_stream(StreamConfig(name="RAW", subjects=["raw.>"]))
    await nc.close()
    async with Bus.connect(NatsSettings(urls=(url,))) as bus:
        await bus.provision()


async def main(args: argparse.Namespace) -> None:
    results: dict[str, list[tuple[float, list[float]]]] = {"raw": [], "bus": []}
    with tempfile.TemporaryDirectory() as tmp:
        server = NatsServer(store_dir=Path(tmp) / "js")
        server.start()
        try:
            await provision(server.url)
            offset = 0
            for _ in range(args.rounds):
                for mode in ("raw", "bus"):
                    results[mode].append(
                        await one_round(mode, server.url, args.messages, args.round_trips, offset)
                    )
                    offset += args.messages + args.round_trips
        finally:
            server.stop()
    for mode, rounds in results.items():
        tps = [tp for tp, _ in rounds]
        lat = [x for _, latencies in rounds for x in latencies]
        print(
            f"{mode}: throughput median {statistics.median(tps):,.0f} msg/s "
            f"(rounds: {', '.join(f'{t:,.0f}' for t in tps)}); "
            f"round trip p50 {statistics.median(lat):.2f} ms, p99 {percentile(lat, 0.99):.2f} ms"
        )
    tp_ratio = statistics.median(
        b[0] / r[0] for r, b in zip(results["raw"], results["bus"], strict=True)
    )
    p50_ratio = statistics.median(
        statistics.median(b[1]) / statistics.median(r[1])
        for r, b in zip(results["raw"], results["bus"], strict=True)
    )
    print(f"bus/raw round-trip p50 ratio: {p50_ratio:.2f}")
    print(f"bus/raw throughput ratio: {tp_ratio:.2f}")


if __name__ == "__main__":
    configure_logging(LoggingSettings(level="warning"))
    if len(sys.argv) > 1 and sys.argv[1] == "--publish":
        _, _, mode, url, count, offset = sys.argv
        asyncio.run(child(mode, url, int(count), int(offset)))
    else:
        parser = argparse.ArgumentParser()
        parser.add_argument("--messages", type=int, default=3000)
        parser.add_argument("--round-trips", type=int, default=300)
        parser.add_argument("--rounds", type=int, default=5)
        asyncio.run(main(parser.parse_args()))
