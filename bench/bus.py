"""Bus benchmark: our publish/consume against a bare nats-py loop, in the same run.

Both sides use the same fresh nats-server (file storage) and the same shape, as deployed: a
publisher process (an agent) publishes sequentially, each publish awaiting its PubAck, while a
consumer (the issuer) fetches in batches and acks. Our side adds what the services rely on:
pydantic encoding and validation, Nats-Msg-Id, bounded concurrency, and the completion records
that keep a server crash from re-running a handler. Printed per side:

- throughput: messages from the publisher's first publish to the consumer's last handled;
- round trip: publish -> handler, one message in flight, p50 and p99.

These machines' speed drifts within seconds, so the publisher processes and both consumers live
for the whole run and short rounds alternate raw and ours (which goes first alternates too);
the throughput ratio is the median of the per-round ratios. The last line is
`bus/raw throughput ratio: R`.

    .venv/bin/python bench/bus.py [--messages 1500] [--round-trips 400] [--rounds 20]
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


# --- the publishers (also run as a child process: `bus.py --publish raw|bus URL`) ---


async def raw_publisher(url: str) -> tuple[Publish, Callable[[], Awaitable[None]]]:
    nc = await nats.connect(url)
    js = nc.jetstream()
    payload = event().model_dump_json().encode()

    async def publish(i: int) -> None:
        await js.publish("raw.east", payload, headers={"Nats-Msg-Id": f"raw-{i}"})

    return publish, nc.close


class BusPublish:
    """Our publish; events are made before the clock starts, as the raw side's payload is:
    measured is the bus layer (encoding, Msg-Id, retry wrapper, publish), not building the
    service's event."""

    def __init__(self, bus: Bus) -> None:
        self._bus = bus
        self._events: dict[int, CsrRequested] = {}

    def prepare(self, start: int, count: int) -> None:
        self._events.update((i, event()) for i in range(start, start + count))

    async def __call__(self, i: int) -> None:
        await self._bus.publish(self._events.pop(i) if i in self._events else event())


async def bus_publisher(url: str) -> tuple[Publish, Callable[[], Awaitable[None]]]:
    connected = Bus.connect(NatsSettings(urls=(url,)))
    bus = await connected.__aenter__()

    async def close() -> None:
        await connected.__aexit__(None, None, None)

    return BusPublish(bus), close


PUBLISHERS = {"raw": raw_publisher, "bus": bus_publisher}


async def child(mode: str, url: str) -> None:
    """Serve `COUNT OFFSET` (prepare, answer `ready`), then `go` (publish, answer `done`)."""
    publish, close = await PUBLISHERS[mode](url)
    loop = asyncio.get_running_loop()
    print("up", flush=True)
    while line := await loop.run_in_executor(None, sys.stdin.readline):
        count, offset = map(int, line.split())
        if isinstance(publish, BusPublish):
            publish.prepare(offset, count)
        print("ready", flush=True)
        await loop.run_in_executor(None, sys.stdin.readline)  # go
        for i in range(offset, offset + count):
            await publish(i)
        print("done", flush=True)
    await close()


class Child:
    """One publisher process, kept for the whole run so that rounds can alternate quickly."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        assert process.stdin is not None
        assert process.stdout is not None
        self.process, self.stdin, self.stdout = process, process.stdin, process.stdout

    @classmethod
    async def start(cls, mode: str, url: str) -> Child:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            __file__,
            "--publish",
            mode,
            url,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        started = cls(process)
        await started.expect("up")
        return started

    async def expect(self, word: str) -> None:
        line = (await self.stdout.readline()).decode().strip()
        if line != word:
            raise RuntimeError(f"publisher said {line!r}, not {word!r}")

    async def say(self, line: str) -> None:
        self.stdin.write(f"{line}\n".encode())
        await self.stdin.drain()

    async def stop(self) -> None:
        self.stdin.close()
        await self.process.wait()


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


async def round_trips(mode: str, url: str, counter: Counter, n: int, offset: int) -> list[float]:
    """Publish -> handler with one message in flight, in this process (ms per message)."""
    publish, close = await PUBLISHERS[mode](url)
    latencies = []
    for i in range(offset, offset + n):
        before = counter.count
        start = time.perf_counter()
        await publish(i)
        await counter.reach(before + 1)
        latencies.append((time.perf_counter() - start) * 1000)
    await close()
    return latencies


async def throughput(publisher: Child, counter: Counter, n: int, offset: int) -> float:
    """Messages per second from the publisher's first publish to the consumer's last handled."""
    await publisher.say(f"{n} {offset}")
    await publisher.expect("ready")
    base = counter.count
    start = time.perf_counter()
    await publisher.say("go")
    await counter.reach(base + n)
    elapsed = time.perf_counter() - start
    await publisher.expect("done")
    return n / elapsed


async def provision(url: str) -> None:
    nc = await nats.connect(url)
    await nc.jetstream().add_stream(StreamConfig(name="RAW", subjects=["raw.>"]))
    await nc.close()
    async with Bus.connect(NatsSettings(urls=(url,))) as bus:
        await bus.provision()


async def main(args: argparse.Namespace) -> None:
    modes = ("raw", "bus")
    throughputs: dict[str, list[float]] = {mode: [] for mode in modes}
    latencies: dict[str, list[list[float]]] = {mode: [] for mode in modes}
    with tempfile.TemporaryDirectory() as tmp:
        server = NatsServer(store_dir=Path(tmp) / "js")
        server.start()
        stop = asyncio.Event()
        try:
            await provision(server.url)
            counters = {mode: Counter() for mode in modes}
            async with asyncio.TaskGroup() as group:
                for mode in modes:
                    group.create_task(CONSUMERS[mode](server.url, counters[mode], stop))
                publishers = {mode: await Child.start(mode, server.url) for mode in modes}
                offset = 0
                per_round = max(1, args.round_trips // args.rounds)
                for r in range(args.rounds):
                    # Alternate which side goes first, so neither always follows the other.
                    for mode in modes if r % 2 == 0 else modes[::-1]:
                        latencies[mode].append(
                            await round_trips(mode, server.url, counters[mode], per_round, offset)
                        )
                        offset += per_round
                        throughputs[mode].append(
                            await throughput(
                                publishers[mode], counters[mode], args.messages, offset
                            )
                        )
                        offset += args.messages
                for publisher in publishers.values():
                    await publisher.stop()
                stop.set()
        finally:
            stop.set()
            server.stop()
    for mode in modes:
        tps = throughputs[mode]
        lat = [x for r in latencies[mode] for x in r]
        q1, _, q3 = statistics.quantiles(tps, n=4)
        print(
            f"{mode}: throughput median {statistics.median(tps):,.0f} msg/s "
            f"(quartiles {q1:,.0f}-{q3:,.0f}, {len(tps)} rounds); "
            f"round trip p50 {statistics.median(lat):.2f} ms, p99 {percentile(lat, 0.99):.2f} ms"
        )
    pairs = [b / r for r, b in zip(throughputs["raw"], throughputs["bus"], strict=True)]
    q1, _, q3 = statistics.quantiles(pairs, n=4)
    p50_ratio = statistics.median(
        statistics.median(b) / statistics.median(r)
        for r, b in zip(latencies["raw"], latencies["bus"], strict=True)
    )
    print(f"bus/raw round-trip p50 ratio: {p50_ratio:.2f}")
    print(f"bus/raw throughput ratio per round: quartiles {q1:.2f}-{q3:.2f}")
    print(f"bus/raw throughput ratio: {statistics.median(pairs):.2f}")


if __name__ == "__main__":
    configure_logging(LoggingSettings(level="warning"))
    if len(sys.argv) > 1 and sys.argv[1] == "--publish":
        _, _, mode, url = sys.argv
        asyncio.run(child(mode, url))
    else:
        parser = argparse.ArgumentParser()
        parser.add_argument("--messages", type=int, default=1500, help="per round and side")
        parser.add_argument("--round-trips", type=int, default=400, help="in all, per side")
        parser.add_argument("--rounds", type=int, default=20)
        asyncio.run(main(parser.parse_args()))
