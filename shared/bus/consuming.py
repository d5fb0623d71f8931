"""Consuming events through a durable pull consumer, with bounded concurrency.

For each message, in this order: refuse what can never be handled (too large, not JSON, unknown
type, wrong schema, envelope disagreeing with its subject, a type this consumer does not take)
by terminating it and logging the reason; otherwise call the handler, keep the message alive
with `in_progress()` while the handler works, and map the handler's outcome:

| outcome                     | to the server                          |
|-----------------------------|----------------------------------------|
| returns                     | ack (double-acked: waits for the server)|
| raises `TransientError`     | nak with its `retry_after`, or backoff  |
| raises `PermanentError`     | term, reason logged                     |
| raises anything else (a bug)| nak with backoff, traceback logged      |

A message is acknowledged only after its handler returned, so a crash or a cancelled handler
leaves it unacknowledged and JetStream redelivers it after `ack_wait`: handlers must be
idempotent.

Exactly-once handling across server crashes: nats-server persists a consumer's acks lazily
(measured: after a SIGKILL up to ~200 ms of confirmed acks are forgotten, even with
`sync_interval: always`), so an acknowledged message can come back. Before acking, the consumer
therefore records the message as handled in the KV bucket `meshtrust-consumed` (key
`<durable>.<stream sequence>`, expiring after `completed_ttl`); a delivery that finds its record
is acknowledged without calling the handler (every delivery is checked: a server that lost its
consumer state also lost the delivery count). Stream writes, unlike consumer state, survive a
crash of the server process, so the record outlives the lost ack. The only remaining duplicate
is a consumer process that dies between its handler's end and the record: handlers stay
idempotent. On stop, no new messages are fetched and in-flight handlers run to completion (the
lifecycle's grace period bounds that; past it they are cancelled and their messages are left
unacknowledged, never half-acknowledged).

Deliberately not here: ordering across messages (handlers run concurrently; the services are
level-based and order-insensitive), and dead-lettering (after `max_deliver` JetStream drops the
message from delivery and publishes a MAX_DELIVERIES advisory; the stream still holds it).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import nats.errors
import nats.js.errors
import structlog
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from shared.bus.connection import BusError, Connection
from shared.bus.kv import Bucket
from shared.bus.provisioning import ensure_kv
from shared.bus.publishing import RETRIABLE as _RETRIABLE
from shared.events import DEFAULT_MAX_BYTES, Event, EventType, InvalidEvent, decode
from shared.runtime.errors import PermanentError, TransientError
from shared.runtime.logging import get_logger
from shared.runtime.retry import RetryPolicy, retry

log = get_logger(__name__)

COMPLETED_BUCKET = "meshtrust-consumed"


@dataclass(frozen=True, slots=True)
class Delivery:
    """What the handler may want to know about the message besides the event."""

    subject: str
    stream_sequence: int
    num_delivered: int
    """1 on first delivery; higher on redelivery."""


Handler = Callable[[Event, Delivery], Awaitable[None]]


@dataclass(frozen=True, kw_only=True)
class ConsumerSettings:
    """One durable consumer. Units are seconds unless said otherwise."""

    durable: str
    filter_subjects: tuple[str, ...]
    accept: frozenset[EventType] | None = None
    """Event types this consumer handles; others are terminated. None: all the filter passes."""
    batch: int = 64
    """Most messages asked for in one fetch (never more than the free concurrency slots)."""
    max_in_flight: int = 32
    """Handlers running at once; JetStream's max_ack_pending is set a little above it."""
    ack_wait: float = 30.0
    """Redelivery after this long without an ack; `in_progress()` every third of it."""
    max_deliver: int = 100
    """Deliveries before JetStream gives up on a message (transient errors only get here)."""
    max_bytes: int = DEFAULT_MAX_BYTES
    """Larger messages are terminated unread."""
    fetch_timeout: float = 1.0
    """How long one fetch waits when nothing is pending; also how quickly a stop is noticed."""
    retry_initial: float = 1.0
    """Nak delay for the first failed delivery; it doubles per delivery ..."""
    retry_max: float = 60.0
    """... up to this cap, with +-20 % jitter."""
    ack_timeout: float = 5.0
    """How long to wait for the server to confirm an ack."""
    provision: bool = True
    """Create/update the durable at start; off where the user may only bind to it."""
    record_completed: bool = True
    """Record handled messages (see the module doc) so that a lost ack never re-runs a handler."""
    completed_ttl: float = 3600.0
    """How long a completion record is kept: far longer than any redelivery takes to come."""
    extra_config: dict[str, object] = field(default_factory=dict)


def nak_delay(num_delivered: int, *, initial: float, cap: float, rng: random.Random) -> float:
    """Capped exponential backoff with +-20 % jitter (pure; unit-tested)."""
    base = min(cap, initial * 2.0 ** max(0, num_delivered - 1))
    return base * rng.uniform(0.8, 1.2)


class Consumer:
    """Runs one durable pull consumer until `stop` is set. Has `name` and `run` (a Component)."""

    def __init__(
        self, connection: Connection, settings: ConsumerSettings, handler: Handler
    ) -> None:
        self._connection = connection
        self._settings = settings
        self._handler = handler
        self._free = settings.max_in_flight
        self._slot_freed = asyncio.Event()
        self._rng = random.Random()  # noqa: S311 - jitter, not cryptography
        self._completed: Bucket | None = None
        self._record_policy = RetryPolicy(
            attempts=0, timeout=connection.settings.publish_deadline, wait_max=1.0
        )

    @property
    def name(self) -> str:
        return f"consumer:{self._settings.durable}"

    def consumer_config(self) -> ConsumerConfig:
        s = self._settings
        return ConsumerConfig(
            name=s.durable,
            durable_name=s.durable,
            filter_subjects=list(s.filter_subjects),
            deliver_policy=DeliverPolicy.ALL,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=s.ack_wait,
            max_deliver=s.max_deliver,
            max_ack_pending=s.max_in_flight + s.batch,
            **s.extra_config,  # type: ignore[arg-type]
        )

    async def _subscribe(self) -> JetStreamContext.PullSubscription:
        js = self._connection.js
        settings = self._connection.settings
        if self._settings.provision:
            await js.add_consumer(settings.stream, config=self.consumer_config())
        if self._settings.record_completed:
            kv = await ensure_kv(
                js,
                bucket=COMPLETED_BUCKET,
                history=1,
                replicas=settings.kv_replicas,
                description="messages each durable consumer has handled (expiring)",
                ttl=self._settings.completed_ttl,
            )
            self._completed = Bucket(self._connection, kv, COMPLETED_BUCKET)
        return await js.pull_subscribe_bind(durable=self._settings.durable, stream=settings.stream)

    async def run(self, stop: asyncio.Event) -> None:
        """Fetch and dispatch until `stop`; returns after in-flight handlers have finished."""
        try:
            sub = await self._subscribe()
        except nats.js.errors.APIError as exc:
            raise BusError(
                f"cannot open consumer {self._settings.durable}: {exc.description}"
            ) from None
        log.info(
            "consuming", durable=self._settings.durable, subjects=self._settings.filter_subjects
        )
        failures = 0
        try:
            async with asyncio.TaskGroup() as handlers:
                while not stop.is_set():
                    if not await self._wait_for_slot(stop):
                        break
                    try:
                        msgs = await sub.fetch(
                            min(self._free, self._settings.batch),
                            timeout=self._settings.fetch_timeout,
                        )
                    except TimeoutError:
                        # nats.errors.TimeoutError usually, but nats-py 2.16 also raises the
                        # builtin asyncio.TimeoutError when the fetch deadline ran out early.
                        failures = 0
                        continue
                    except (
                        nats.errors.ConnectionReconnectingError,
                        nats.errors.ConnectionClosedError,
                        nats.js.errors.APIError,
                        nats.errors.Error,
                    ) as exc:
                        if self._connection.nc.is_closed:
                            raise BusError("the NATS connection was closed") from None
                        failures += 1
                        delay = min(5.0, 0.1 * 2**failures)
                        log.warning(
                            "fetch failed, retrying",
                            error_type=type(exc).__name__,
                            error=str(exc),
                            retry_in=delay,
                        )
                        await _wait(stop, delay)
                        continue
                    failures = 0
                    for msg in msgs:
                        self._free -= 1
                        handlers.create_task(self._handle(msg), name=f"{self.name}:handle")
        finally:
            with contextlib.suppress(nats.errors.Error):
                await sub.unsubscribe()
        log.info("consumer stopped", durable=self._settings.durable)

    async def _wait_for_slot(self, stop: asyncio.Event) -> bool:
        while self._free <= 0:
            self._slot_freed.clear()
            await _wait_any(stop, self._slot_freed)
            if stop.is_set():
                return False
        return True

    def _release(self) -> None:
        self._free += 1
        self._slot_freed.set()

    async def _handle(self, msg: Msg) -> None:
        try:
            meta = msg.metadata
            delivery = Delivery(
                subject=msg.subject,
                stream_sequence=meta.sequence.stream,
                num_delivered=meta.num_delivered,
            )
            with structlog.contextvars.bound_contextvars(
                subject=msg.subject, seq=delivery.stream_sequence, delivered=delivery.num_delivered
            ):
                await self._handle_one(msg, delivery)
        finally:
            self._release()

    async def _handle_one(self, msg: Msg, delivery: Delivery) -> None:
        s = self._settings
        try:
            event = decode(msg.data, subject=msg.subject, max_bytes=s.max_bytes)
            if s.accept is not None and event.type not in s.accept:
                raise InvalidEvent("UnexpectedType", f"{s.durable} does not handle {event.type}")
        except InvalidEvent as exc:
            log.warning("terminating invalid message", reason=exc.reason, detail=exc.message)
            await msg.term()
            return
        with structlog.contextvars.bound_contextvars(
            cluster=event.cluster, issuance=event.issuance, event=event.type.value
        ):
            try:
                # Not only when num_delivered > 1: a server that lost its consumer state in a
                # crash forgets the delivery count too, and redelivers as if for the first time.
                if await self._was_completed(delivery):
                    log.info("redelivery of a handled message; acknowledging it again")
                    await self._ack(msg, delivery)
                    return
                await self._run_handler(msg, event, delivery)
            except TransientError as exc:
                delay = exc.retry_after if exc.retry_after is not None else self._delay(delivery)
                log.info("transient failure, redelivering", error=exc.message, retry_in=delay)
                await msg.nak(delay=delay)
                return
            except PermanentError as exc:
                log.warning("permanent failure, terminating", reason=exc.reason, error=exc.message)
                await msg.term()
                return
            except Exception:
                delay = self._delay(delivery)
                log.exception("handler failed unexpectedly, redelivering", retry_in=delay)
                await msg.nak(delay=delay)
                return
            await self._record_completed(delivery)
            await self._ack(msg, delivery)

    def _completion_key(self, delivery: Delivery) -> str:
        return f"{self._settings.durable}.{delivery.stream_sequence}"

    async def _was_completed(self, delivery: Delivery) -> bool:
        if self._completed is None:
            return False
        try:
            found = await self._completed.get(self._completion_key(delivery)) is not None
            return found
        except (nats.errors.Error, TimeoutError) as exc:
            # Unknown: neither skip real work nor risk doing it twice; come back shortly.
            raise TransientError(f"cannot read completion record ({type(exc).__name__})") from None

    async def _record_completed(self, delivery: Delivery) -> None:
        if self._completed is None:
            return
        completed = self._completed
        key = self._completion_key(delivery)

        async def put() -> None:
            await completed.put(key, b"")

        try:
            await retry(put, on=_RETRIABLE, policy=self._record_policy)
        except (nats.errors.Error, TimeoutError) as exc:
            log.warning(
                "completion not recorded; a lost ack would re-run the handler",
                error_type=type(exc).__name__,
            )

    async def _ack(self, msg: Msg, delivery: Delivery) -> None:
        s = self._settings
        try:
            await msg.ack_sync(timeout=s.ack_timeout)
            log.debug("acked", seq=delivery.stream_sequence)
        except (nats.errors.TimeoutError, nats.errors.Error) as exc:
            # The handler's work stands and is recorded: the redelivery will be acked unrun.
            log.warning(
                "ack not confirmed; expect a redelivery",
                error_type=type(exc).__name__,
                seq=delivery.stream_sequence,
            )

    async def _run_handler(self, msg: Msg, event: Event, delivery: Delivery) -> None:
        interval = self._settings.ack_wait / 3

        async def keep_alive() -> None:
            while True:
                await asyncio.sleep(interval)
                try:
                    await msg.in_progress()
                except nats.errors.Error as exc:
                    log.debug("in_progress failed", error_type=type(exc).__name__)

        # Owned by this frame: cancelled and awaited before it returns. Not a TaskGroup, which
        # would wrap the handler's TransientError/PermanentError in an ExceptionGroup.
        alive = asyncio.create_task(keep_alive(), name=f"{self.name}:keep-alive")
        try:
            await self._handler(event, delivery)
        finally:
            alive.cancel()
            await asyncio.wait([alive])

    def _delay(self, delivery: Delivery) -> float:
        return nak_delay(
            delivery.num_delivered,
            initial=self._settings.retry_initial,
            cap=self._settings.retry_max,
            rng=self._rng,
        )


async def _wait(stop: asyncio.Event, seconds: float) -> None:
    """Sleep `seconds`, or less if `stop` is set meanwhile."""
    try:
        async with asyncio.timeout(seconds):
            await stop.wait()
    except TimeoutError:
        pass


async def _wait_any(*events: asyncio.Event) -> None:
    async with asyncio.TaskGroup() as group:
        waiters = [group.create_task(e.wait()) for e in events]
        _, pending = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
