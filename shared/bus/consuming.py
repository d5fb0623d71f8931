"""Consuming events through a durable pull consumer, with bounded concurrency.

For each message, in this order: refuse what can never be handled (too large, not JSON, unknown
type, wrong schema, envelope disagreeing with its subject, a type this consumer does not take)
by terminating it and logging the reason; otherwise call the handler, keep the message alive
with `in_progress()` while the handler works, and map the handler's outcome:

| outcome                      | to the server                            |
|------------------------------|------------------------------------------|
| returns                      | ack (after the completion record)        |
| raises `TransientError`      | nak with its `retry_after`, or backoff   |
| raises `PermanentError`      | term, reason logged                      |
| raises anything else (a bug) | nak with backoff, traceback logged       |

A message is acknowledged only after its handler returned, so a crash or a cancelled handler
leaves it unacknowledged and JetStream redelivers it after `ack_wait`: handlers must be
idempotent. On stop, no new messages are fetched and in-flight handlers run to completion (the
lifecycle's grace period bounds that; past it they are cancelled and their messages are left
unacknowledged, never half-acknowledged).

Exactly-once handling across server crashes: nats-server persists acks lazily, so an acked
message can come back after a server crash; with `record_completed` (the default) every handled
message is recorded before its ack (see `shared.bus.completions`) and a delivery already
recorded is acked without running the handler again. Handlers stay idempotent all the same: a
consumer process that dies between its handler's end and the record will see the message again.

Deliberately not here: ordering across messages (handlers run concurrently; the services are
level-based and order-insensitive), and dead-lettering (after `max_deliver` JetStream drops the
message from delivery and publishes a MAX_DELIVERIES advisory; the stream still holds it).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time

import nats.errors
import nats.js.errors
import structlog
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig

from shared.bus.completions import CompletionLog, RecordFailed
from shared.bus.connection import BusError, Connection
from shared.bus.durables import (
    ConsumerSettings,
    Delivery,
    Handler,
    durable_config,
    nak_delay,
)
from shared.bus.metrics import ConsumerMetrics, Outcome
from shared.bus.upkeep import DurableUpkeep
from shared.events import Event, InvalidEvent, decode
from shared.runtime.concurrency import Interrupted, pause, raise_if_cancelled, unless_set, wait_any
from shared.runtime.errors import PermanentError, TransientError
from shared.runtime.liveness import Heartbeat
from shared.runtime.logging import get_logger
from shared.runtime.spans import handling

log = get_logger(__name__)

KEEP_ALIVE_MAX = 2.0
"""Longest interval between two `in_progress()` of a message being handled (seconds)."""
STUCK_AFTER = 30.0
"""Seconds beyond a fetch's wait (`fetch_timeout`) without a turn of the fetch loop after which
the consumer is stuck (`/livez`); a turn also holds a retry's pause (5 s) or a request's timeout."""


class Consumer:
    """Runs one durable pull consumer until `stop` is set. Has `name` and `run` (a Component)."""

    def __init__(
        self,
        connection: Connection,
        settings: ConsumerSettings,
        handler: Handler,
        *,
        metrics: ConsumerMetrics | None = None,
    ) -> None:
        self._connection = connection
        self._settings = settings
        self._handler = handler
        self._metrics = metrics
        self._free = settings.max_in_flight
        self._quiet = True
        """The last fetch found nothing (or none was made yet): see `_fetch_size`."""
        self._in_flight: dict[int, tuple[Msg, float]] = {}
        """Messages being handled (by id: Msg is unhashable), and when they were fetched."""
        self._slot_freed = asyncio.Event()
        self._rng = random.Random()  # noqa: S311 - jitter, not cryptography
        self._completions: CompletionLog | None = None
        self._unfinished: set[int] = set()
        """Stream sequences fetched and not yet acknowledged or terminated."""
        self._newest = 0
        """The newest stream sequence fetched."""
        self._upkeep = DurableUpkeep(connection, settings, metrics)
        """The durable's timing, ack floor (see `resume_sequence`) and lag."""
        self.progress = Heartbeat(self.name, within=STUCK_AFTER + settings.fetch_timeout)
        """Beaten at every turn of the fetch loop, and by the keep-alive while handlers run (the
        fetch loop may be waiting for their slots): `/livez` watches it (`supervise`)."""

    @property
    def name(self) -> str:
        return f"consumer:{self._settings.durable}"

    def consumer_config(self, *, start_sequence: int | None = None) -> ConsumerConfig:
        """The durable's configuration; from `start_sequence` when it is re-created."""
        return durable_config(self._settings, start_sequence=start_sequence)

    async def _subscribe(self) -> JetStreamContext.PullSubscription:
        js = self._connection.js
        settings = self._connection.settings
        if self._settings.provision:
            try:
                await js.add_consumer(settings.stream, config=self.consumer_config())
            except nats.js.errors.APIError as exc:
                # Re-created from a start sequence (by the hub or by `_consumer_missing`): its
                # deliver policy cannot change; its timing (ack wait) still follows settings.
                await self._upkeep.update_timing(self.consumer_config(), exc.description)
        if self._settings.record_completed:
            self._completions = CompletionLog(
                self._connection,
                durable=self._settings.durable,
                ttl=self._settings.completed_ttl,
                linger=self._settings.record_linger,
            )
            await self._completions.open(provision=self._settings.provision)
        return await js.pull_subscribe_bind(durable=self._settings.durable, stream=settings.stream)

    async def _open(self, stop: asyncio.Event) -> JetStreamContext.PullSubscription | None:
        """`_subscribe`, tried again for up to the connection's `connect_deadline` while NATS
        answers nothing or the completion records cannot be read yet (a server restarting as
        the service starts); a refusal (`APIError`) or a deadline run out surfaces; None when
        `stop` was set meanwhile (a stop is no failure, even before the consumer ran). While the
        connection is reconnecting the deadline does not run: a NATS outage that begins as a
        consumer opens is waited out, as it is once the consumer runs (it killed the issuer
        in CI when the outage outlasted the deadline)."""
        deadline = time.monotonic() + self._connection.settings.connect_deadline
        delay = 0.1
        while True:
            self.progress.beat()  # waiting out an outage is not being stuck
            try:
                return await self._subscribe()
            except nats.js.errors.APIError:
                raise
            except (nats.errors.Error, TimeoutError, TransientError) as exc:
                nc = self._connection.nc
                if not nc.is_connected and not nc.is_closed:
                    # NATS went away after the service connected: wait for it as the
                    # connection does (forever), then give the open its time again.
                    deadline = time.monotonic() + self._connection.settings.connect_deadline
                if stop.is_set():
                    return None
                if time.monotonic() + delay > deadline:
                    if isinstance(exc, TransientError):
                        raise BusError(
                            f"cannot open consumer {self._settings.durable}: {exc.message}"
                        ) from None
                    raise
                log.info(
                    "consumer not open yet, retrying",
                    durable=self._settings.durable,
                    error_type=type(exc).__name__,
                    retry_in=delay,
                )
                await pause(stop, delay)
                delay = min(2.0, delay * 2)

    def resume_sequence(self) -> int | None:
        """Where a re-created durable must start so that nothing is lost.

        Just after the server's ack floor as last seen (refreshed while consuming):
        shared by every replica consuming from this durable, so a replica that has nothing
        unfinished cannot skip a message another one was asked to come back to. Stale, it only
        starts earlier: what was handled above it is in the completion records, acknowledged
        unrun. Without a floor seen, the oldest message this one fetched and did not finish,
        else just after the newest it fetched (None before the first fetch: the beginning)."""
        floor = self._upkeep.floor
        if floor is not None:
            return floor + 1
        if self._unfinished:
            return min(self._unfinished)
        return self._newest + 1 if self._newest else None

    async def _consumer_missing(self, stop: asyncio.Event, failures: int) -> None:
        """No consumer answered the pull (JetStream's 503: it was deleted, or is not created
        yet). Where this identity provisions its consumer, re-create it from where this one
        stopped; else the hub does (`shared.bus.fleet`) and this waits for it."""
        durable = self._settings.durable
        if self._settings.provision:
            start = self.resume_sequence()
            try:
                await self._connection.js.add_consumer(
                    self._connection.settings.stream,
                    config=self.consumer_config(start_sequence=start),
                )
            except (nats.errors.Error, TimeoutError) as exc:
                log.warning(
                    "consumer missing; re-creating it failed",
                    durable=durable,
                    error_type=type(exc).__name__,
                )
            else:
                log.warning("consumer was missing; re-created", durable=durable, start=start)
        elif failures == 1:
            log.warning("waiting for consumer (the hub creates it)", durable=durable)
        await pause(stop, min(1.0, 0.1 * 2**failures))

    async def run(self, stop: asyncio.Event) -> None:
        """Fetch and dispatch until `stop`; returns after in-flight handlers have finished."""
        try:
            sub = await self._open(stop)
        except nats.js.errors.APIError as exc:
            raise BusError(
                f"cannot open consumer {self._settings.durable}: {exc.description}"
            ) from None
        except (nats.errors.Error, TimeoutError) as exc:
            raise BusError(
                f"cannot open consumer {self._settings.durable}: no answer from JetStream "
                f"({type(exc).__name__}); is NATS up, and may this user use that consumer?"
            ) from None
        if sub is None:
            log.info("consumer stopped before it opened", durable=self._settings.durable)
            return
        log.info(
            "consuming", durable=self._settings.durable, subjects=self._settings.filter_subjects
        )
        try:
            async with asyncio.TaskGroup() as outer:
                helpers = [
                    outer.create_task(self._keep_alive(), name=f"{self.name}:keep-alive"),
                    outer.create_task(self._upkeep.run(), name=f"{self.name}:info"),
                ]
                if self._completions is not None:
                    helpers.append(
                        outer.create_task(self._completions.run(), name=f"{self.name}:records")
                    )
                try:
                    async with asyncio.TaskGroup() as handlers:
                        await self._fetch_loop(sub, stop, handlers)
                finally:
                    for helper in helpers:
                        helper.cancel()
        finally:
            with contextlib.suppress(nats.errors.Error):
                await sub.unsubscribe()
        log.info("consumer stopped", durable=self._settings.durable)

    async def _fetch_loop(
        self,
        sub: JetStreamContext.PullSubscription,
        stop: asyncio.Event,
        handlers: asyncio.TaskGroup,
    ) -> None:
        failures = 0
        while not stop.is_set():
            self.progress.beat()
            if not await self._wait_for_slot(stop):
                return
            fetch = sub.fetch(self._fetch_size(), timeout=self._settings.fetch_timeout)
            try:
                # A reconnect ends the wait: the pull request died with the old connection.
                msgs = await unless_set(fetch, stop, self._connection.reconnected)
                raise_if_cancelled()
            except Interrupted:
                continue  # the loop's condition sees a stop
            except nats.js.errors.ServiceUnavailableError:
                failures += 1
                self._quiet = True
                await self._consumer_missing(stop, failures)
                continue
            except TimeoutError:  # nats-py's, or the builtin when its deadline ran out early
                raise_if_cancelled()
                failures = 0
                self._quiet = True
                self._upkeep.pending(0)  # nothing was waiting to be delivered
                continue
            except nats.errors.Error as exc:
                if self._connection.nc.is_closed:
                    raise BusError("the NATS connection was closed") from None
                failures += 1
                self._quiet = True
                delay = min(5.0, 0.1 * 2**failures)
                log.warning(
                    "fetch failed, retrying",
                    error_type=type(exc).__name__,
                    error=str(exc),
                    retry_in=delay,
                )
                await pause(stop, delay)
                continue
            failures = 0
            self._quiet = False
            self._upkeep.pending_after(msgs)
            now = time.monotonic()
            for msg in msgs:
                self._free -= 1
                self._in_flight[id(msg)] = (msg, now)
                if self._metrics is not None:
                    self._metrics.in_flight.labels(durable=self._settings.durable).inc()
                handlers.create_task(self._handle(msg))

    def _fetch_size(self) -> int:
        """How many messages to ask for: one after a fetch that found nothing, else a batch.

        A fetch that times out leaves its pull request's end-of-request status (408) on the
        way. nats-py's fetch of more than one message takes such a late status, if it arrives
        first, for its own request's answer and sends a second pull request; one of the two
        then stays open on the server after the fetch returns. The next message is delivered
        on it, and the fetch that receives it waits, after that first message, for the rest of
        its batch or its own request's status: until its request expires, up to `fetch_timeout`
        late. Measured on a real nats-server (60 messages, one at a time at random moments):
        fetches of 8 delivered 3 to 4 of them 40-880 ms late; fetching one message after each
        timeout, none later than 2.4 ms. In a steady stream fetches do not time out.
        """
        if self._quiet:
            return 1
        return min(self._free, self._settings.batch)

    async def _keep_alive(self) -> None:
        """Tell the server which messages are still being worked on: every third of `ack_wait`,
        and at least every `KEEP_ALIVE_MAX` seconds, since a consumer the hub made for a
        cluster (`shared.bus.fleet`) may have a shorter ack wait than this side knows."""
        interval = min(self._settings.ack_wait / 3, KEEP_ALIVE_MAX)
        while True:
            raise_if_cancelled()
            await asyncio.sleep(interval)
            if self._free < self._settings.max_in_flight:
                self.progress.beat()  # the fetch loop may be waiting for these handlers
            due = time.monotonic() - interval
            for msg, started in list(self._in_flight.values()):
                if started <= due:
                    try:
                        await msg.in_progress()
                    except nats.errors.Error as exc:
                        log.debug("in_progress failed", error_type=type(exc).__name__)

    async def _wait_for_slot(self, stop: asyncio.Event) -> bool:
        """Wait until a whole batch fits: fetching one message per freed slot would cost a round
        trip per message. When the batch is all the slots, all but one: the one a lone event
        took after a quiet fetch (`_fetch_size`), so the next ones are not held behind it."""
        wanted = min(self._settings.batch, max(1, self._settings.max_in_flight - 1))
        while self._free < wanted:
            self.progress.beat()  # and the keep-alive beats it while this waits
            self._slot_freed.clear()
            await wait_any(stop, self._slot_freed)
            if stop.is_set():
                return False
        return True

    async def _handle(self, msg: Msg) -> None:
        sequence = 0
        try:
            meta = msg.metadata
            sequence = meta.sequence.stream
            self._unfinished.add(sequence)
            self._newest = max(self._newest, sequence)
            delivery = Delivery(
                subject=msg.subject,
                stream_sequence=sequence,
                num_delivered=meta.num_delivered,
            )
            if self._metrics is not None and delivery.num_delivered > 1:
                self._metrics.redelivered.labels(durable=self._settings.durable).inc()
            with handling(msg.headers, subject=msg.subject, consumer=self._settings.durable):
                done = await self._handle_one(msg, delivery)
            if done:
                self._unfinished.discard(sequence)
        except nats.errors.Error as exc:
            # The connection failed under an ack/nak/term: the server redelivers the message
            # after ack_wait, and the consumer goes on.
            log.warning("reply to the server failed", error_type=type(exc).__name__)
        except ValueError:
            # Not a JetStream delivery (its reply subject is no ack subject): nothing to answer.
            log.warning("ignoring a message that is not a JetStream delivery")
        finally:
            del self._in_flight[id(msg)]
            if self._metrics is not None:
                self._metrics.in_flight.labels(durable=self._settings.durable).dec()
            self._free += 1
            self._slot_freed.set()

    async def _accepted(self, msg: Msg, delivery: Delivery) -> Event | None:
        """The message's event; None (and the message terminated, the reason logged) when it
        can never be handled here."""
        s = self._settings
        try:
            event = decode(msg.data, subject=msg.subject, max_bytes=s.max_bytes)
            if s.accept is not None and event.type not in s.accept:
                raise InvalidEvent("UnexpectedType", f"{s.durable} does not handle {event.type}")
        except InvalidEvent as exc:
            log.warning(
                "terminating invalid message",
                reason=exc.reason,
                detail=exc.message,
                subject=msg.subject,
                seq=delivery.stream_sequence,
            )
            await msg.term()
            self._outcome("term")
            return None
        return event

    async def _handle_one(self, msg: Msg, delivery: Delivery) -> bool:
        """Handle one message; True when it is done with (acknowledged or terminated), False
        when it comes back (nak)."""
        event = await self._accepted(msg, delivery)
        if event is None:
            return True
        # What identifies the message, on every log line below, the handler's included. Each
        # message is handled in a task of its own, whose context is a copy: bound here, it
        # ends with the task, with no reset to pay for.
        structlog.contextvars.bind_contextvars(
            seq=delivery.stream_sequence,
            cluster=event.cluster,
            issuance=event.issuance,
            event=event.type.value,
        )
        try:
            # Not only when num_delivered > 1: a server that lost its consumer state in a
            # crash forgets the delivery count too, and redelivers as if for the first time.
            # Records that cannot be read raise TransientError: nak, and come back later.
            if self._completions is not None and await self._completions.seen(
                delivery.stream_sequence
            ):
                log.info("redelivery of a handled message; acknowledging it again")
                await self._ack(msg, delivery)
                self._outcome("ack")
                return True
            await self._handler(event, delivery)
        except TransientError as exc:
            delay = exc.retry_after if exc.retry_after is not None else self._delay(delivery)
            log.info("transient failure, redelivering", error=exc.message, retry_in=delay)
            await msg.nak(delay=delay)
            self._outcome("nak")
            return self._last_delivery(delivery)
        except PermanentError as exc:
            log.warning("permanent failure, terminating", reason=exc.reason, error=exc.message)
            await msg.term()
            self._outcome("term")
            return True
        except Exception:
            delay = self._delay(delivery)
            log.exception("handler failed unexpectedly, redelivering", retry_in=delay)
            await msg.nak(delay=delay)
            self._outcome("nak")
            return self._last_delivery(delivery)
        await self._record_completed(delivery)
        await self._ack(msg, delivery)
        self._outcome("ack")
        return True

    def _outcome(self, outcome: Outcome) -> None:
        if self._metrics is not None:
            self._metrics.outcome(self._settings.durable, outcome)

    def _last_delivery(self, delivery: Delivery) -> bool:
        """Whether JetStream will not deliver this message again (its `max_deliver` is spent):
        then it is done with, as far as `resume_sequence` is concerned."""
        return delivery.num_delivered >= self._settings.max_deliver

    async def _record_completed(self, delivery: Delivery) -> None:
        if self._completions is None:
            return
        try:
            await self._completions.record(delivery.stream_sequence)
        except RecordFailed as exc:
            log.warning(
                "completion not recorded; a lost ack would re-run the handler", error=str(exc)
            )

    async def _ack(self, msg: Msg, delivery: Delivery) -> None:
        """Acknowledge. With completion records the ack need not be confirmed: the record already
        makes the message's handling durable, and a lost ack only brings a redelivery that is
        acked unrun. Without records, wait for the server's confirmation (a double ack)."""
        try:
            if self._completions is not None:
                await msg.ack()
            else:
                await msg.ack_sync(timeout=self._settings.ack_timeout)
            log.debug("acked", seq=delivery.stream_sequence)
        except nats.errors.Error as exc:
            log.warning(
                "ack not confirmed; expect a redelivery",
                error_type=type(exc).__name__,
                seq=delivery.stream_sequence,
            )

    def _delay(self, delivery: Delivery) -> float:
        return nak_delay(
            delivery.num_delivered,
            initial=self._settings.retry_initial,
            cap=self._settings.retry_max,
            rng=self._rng,
        )
