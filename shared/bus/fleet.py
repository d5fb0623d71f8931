"""The consumers a remote cluster's services read through, and who creates them.

Each cluster's agent and bouncer connect in a NATS account of their own (docs/bus.md). There
they may publish only the event subjects the hub account exports to them, pull from and
acknowledge only their own durable consumers, and read streams only by direct get. JetStream's
API (creating, changing, deleting consumers and streams) answers only requests made inside the
hub account, so a cluster's identity cannot create, reconfigure or delete any consumer: the hub
creates theirs (`ensure_cluster_consumers`, run by the issuer for every cluster it has a
declaration for, and again whenever one disappears). Where a service may use the JetStream API
itself (one account without permissions: the tests, a single-tenant setup), it creates its own
consumers from the same specifications (`ConsumerSettings.provision`).

The hub keeps one more durable per cluster for itself: `csr-<cluster>`, the issuer's reader of
that cluster's CSRs (`shared.bus.fairness`: a durable per cluster, so that one cluster's backlog
is never ahead of another's in stream order). It lives and heals with the cluster's others.

The specifications fix what the server enforces: the filter subjects (a cluster reads only its
own events), ack wait, deliveries, and how many messages may be pending. What a service tunes
for itself (how many handlers, fetch sizes, timeouts) stays in its settings.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import nats.errors
import nats.js.errors
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from shared.bus.completions import DEFAULT_TTL as RECORDS_TTL
from shared.bus.connection import Connection
from shared.bus.durables import ConsumerSettings, durable_config, timing_update
from shared.events import DESIRED_BUCKET, EventType, check_cluster_name, subject
from shared.runtime.clock import utcnow
from shared.runtime.concurrency import raise_if_cancelled
from shared.runtime.errors import TransientError
from shared.runtime.logging import get_logger

log = get_logger(__name__)

STREAM = "MESHTRUST"
"""The event stream (`NatsSettings.stream`'s default; the audit log)."""
DESIRED_STREAM = f"KV_{DESIRED_BUCKET}"
"""The stream behind the desired-state bucket."""
ADVISORY_DELETED = "$JS.EVENT.ADVISORY.CONSUMER.DELETED"

AGENT_EVENTS = frozenset(
    {EventType.CERTIFICATE_ISSUED, EventType.CERTIFICATE_DENIED, EventType.BOUNCE_COMPLETED}
)
"""What a cluster's agent consumes."""
BOUNCER_EVENTS = frozenset({EventType.BOUNCE_REQUESTED})
"""What a cluster's bouncer consumes."""
CSR_EVENTS = frozenset({EventType.CSR_REQUESTED})
"""What the issuer consumes of a cluster through that cluster's own durable (fairness)."""
AGENT_PUBLISHES = (
    EventType.CSR_REQUESTED,
    EventType.STATUS_CHANGED,
    EventType.BOUNCE_REQUESTED,
)
"""The only events the hub accepts from a cluster's agent."""
BOUNCER_PUBLISHES = (EventType.BOUNCE_COMPLETED,)
"""The only event the hub accepts from a cluster's bouncer."""


def agent_durable(cluster: str) -> str:
    return f"agent-{check_cluster_name(cluster)}"


def bouncer_durable(cluster: str) -> str:
    return f"bouncer-{check_cluster_name(cluster)}"


def csr_durable(cluster: str) -> str:
    """The issuer's durable of one cluster's CSRs (`shared.bus.fairness`)."""
    return f"csr-{check_cluster_name(cluster)}"


def desired_durable(cluster: str) -> str:
    """The agent's feed of its cluster's desired-state changes."""
    return f"desired-{check_cluster_name(cluster)}"


def desired_keys(cluster: str) -> str:
    """The desired-state keys of one cluster, as a KV key pattern."""
    return f"{check_cluster_name(cluster)}.>"


@dataclass(frozen=True, slots=True, kw_only=True)
class EventConsumerSpec:
    """What the server enforces for one cluster's durable on the event stream."""

    durable: str
    events: frozenset[EventType]
    cluster: str
    ack_wait: float
    """Seconds without an ack (or an `in_progress`) before the message comes back."""
    max_deliver: int
    """Deliveries before JetStream gives up on a message (transient failures only)."""
    max_ack_pending: int
    """Messages delivered and not yet acknowledged, at most: the service's in-flight bound."""

    @property
    def filter_subjects(self) -> tuple[str, ...]:
        return tuple(subject(self.cluster, event) for event in sorted(self.events))

    def config(
        self, *, start_sequence: int | None = None, start_time: datetime | None = None
    ) -> ConsumerConfig:
        """The consumer's configuration; from `start_sequence` (or `start_time`) when it is
        re-created after it disappeared (what was handled before is in its completion
        records)."""
        return durable_config(
            self.consumer_settings(provision=True),
            start_sequence=start_sequence,
            start_time=start_time,
        )

    def consumer_settings(self, *, provision: bool, **knobs: Any) -> ConsumerSettings:
        """The service's side of this consumer; `knobs`: what it tunes for itself."""
        return ConsumerSettings(
            durable=self.durable,
            filter_subjects=self.filter_subjects,
            accept=self.events,
            ack_wait=self.ack_wait,
            max_deliver=self.max_deliver,
            max_ack_pending=self.max_ack_pending,
            provision=provision,
            **knobs,
        )


DEFAULT_ACK_WAIT = 5.0
"""Seconds before an unacknowledged cluster event comes back; handlers that run longer are kept
alive with `in_progress()` (`shared.bus.consuming`), so this bounds only a crash's delay
(docs/bus.md, "Ack wait and crash recovery")."""


def agent_consumer(cluster: str, *, ack_wait: float = DEFAULT_ACK_WAIT) -> EventConsumerSpec:
    return EventConsumerSpec(
        durable=agent_durable(cluster),
        events=AGENT_EVENTS,
        cluster=cluster,
        ack_wait=ack_wait,
        max_deliver=100,
        max_ack_pending=64,
    )


def bouncer_consumer(cluster: str, *, ack_wait: float = DEFAULT_ACK_WAIT) -> EventConsumerSpec:
    # Bounces are few and slow: a running one is kept alive with in_progress().
    return EventConsumerSpec(
        durable=bouncer_durable(cluster),
        events=BOUNCER_EVENTS,
        cluster=cluster,
        ack_wait=ack_wait,
        max_deliver=50,
        max_ack_pending=16,
    )


CSR_MAX_ACK_PENDING = 16
"""A cluster's CSRs delivered and not yet answered, across every issuer replica: the most of
one cluster's backlog the issuers hold at once, so that a flood waits in the stream, not in
the issuers (docs/issuer.md, "Fairness")."""
CSR_CLUSTER_IN_FLIGHT = 8
"""A cluster's CSRs one issuer replica holds at once (fetched together): what another
cluster's CSR may wait behind, per busy cluster."""


def csr_consumer(cluster: str, *, ack_wait: float = DEFAULT_ACK_WAIT) -> EventConsumerSpec:
    """The issuer's durable of `cluster`'s `csr.requested`; made by the hub like the others,
    read only by the issuer (no cluster account imports it)."""
    return EventConsumerSpec(
        durable=csr_durable(cluster),
        events=CSR_EVENTS,
        cluster=cluster,
        ack_wait=ack_wait,
        max_deliver=100,
        max_ack_pending=CSR_MAX_ACK_PENDING,
    )


def desired_consumer_config(cluster: str) -> ConsumerConfig:
    """The agent's change feed of its cluster's desired state: a durable that starts at the
    last value of every key and then follows new writes. Unacknowledged: the agent reads a full
    snapshot by direct get whenever it (re)starts watching, so a change lost in delivery is
    caught by the next snapshot (`shared.bus.kv`)."""
    name = desired_durable(cluster)
    return ConsumerConfig(
        name=name,
        durable_name=name,
        filter_subject=f"$KV.{DESIRED_BUCKET}.{desired_keys(cluster)}",
        deliver_policy=DeliverPolicy.LAST_PER_SUBJECT,
        ack_policy=AckPolicy.NONE,
        max_ack_pending=-1,
    )


def cluster_consumers(
    cluster: str, *, ack_wait: float = DEFAULT_ACK_WAIT, csr_ack_wait: float = DEFAULT_ACK_WAIT
) -> list[tuple[str, ConsumerConfig]]:
    """(stream, configuration) of every consumer the hub keeps for `cluster`."""
    return [
        (STREAM, agent_consumer(cluster, ack_wait=ack_wait).config()),
        (STREAM, bouncer_consumer(cluster, ack_wait=ack_wait).config()),
        (STREAM, csr_consumer(cluster, ack_wait=csr_ack_wait).config()),
        (DESIRED_STREAM, desired_consumer_config(cluster)),
    ]


class FleetConsumers:
    """The hub's keeper of every cluster's consumers: a Component (`name`, `run(stop)`).

    `ensure(cluster)` makes a cluster's consumers when the hub first needs them (the issuer
    calls it before it publishes desired state for that cluster). `run` re-creates any of them
    that disappears: at once on JetStream's consumer-deleted advisory, and at every sweep as a
    backstop. A re-created event consumer starts just after the ack floor last seen for it:
    what it handled above the floor is in its completion records, so nothing is lost and
    nothing handled twice. Without a floor seen (a new cluster, or a consumer that went while
    no issuer ran) it starts at what the completion records still cover (their TTL), not at
    the beginning of the cluster's history.
    """

    name = "fleet-consumers"

    def __init__(
        self,
        connection: Connection,
        *,
        ack_wait: float = DEFAULT_ACK_WAIT,
        csr_ack_wait: float = DEFAULT_ACK_WAIT,
        clusters: Iterable[str] = (),
        sweep_interval: float = 60.0,
    ) -> None:
        """`clusters`: those whose consumers `run` makes at once (the deployment's list);
        `ack_wait`: of the agents' and bouncers' durables; `csr_ack_wait`: of the issuer's."""
        self._connection = connection
        self._initial = tuple(clusters)
        self._ack_wait = ack_wait
        self._csr_ack_wait = csr_ack_wait
        self._sweep_interval = sweep_interval
        self._clusters: set[str] = set()
        self._floors: dict[tuple[str, str], int] = {}
        self._wake: asyncio.Queue[str] = asyncio.Queue()
        self._failures: dict[str, int] = {}
        """Checks failed in a row per cluster: each is tried again after a growing delay."""
        self._csr_listeners: list[Callable[[str], None]] = []

    def on_csr_durable_created(self, listener: Callable[[str], None]) -> None:
        """Call `listener(cluster)` whenever a cluster's CSR durable is made, or found with
        messages pending or unacknowledged: CSRs stored before it existed (or before this
        process listened) wait in it, and nothing else announces them."""
        self._csr_listeners.append(listener)

    @property
    def clusters(self) -> frozenset[str]:
        return frozenset(self._clusters)

    async def ensure(self, cluster: str) -> None:
        """Make `cluster`'s consumers if missing (once per process; `run` keeps them).
        `TransientError` when JetStream cannot be asked."""
        if cluster not in self._clusters:
            await self.check(cluster)

    async def check(self, cluster: str) -> None:
        """What a sweep does for `cluster` now: make what is missing, note the ack floors."""
        events = [
            agent_consumer(cluster, ack_wait=self._ack_wait),
            bouncer_consumer(cluster, ack_wait=self._ack_wait),
            csr_consumer(cluster, ack_wait=self._csr_ack_wait),
        ]
        for spec in events:
            await self._ensure_one(STREAM, spec.durable, cluster, spec=spec)
        await self._ensure_one(DESIRED_STREAM, desired_durable(cluster), cluster)
        self._clusters.add(cluster)

    async def _ensure_one(
        self, stream: str, durable: str, cluster: str, *, spec: EventConsumerSpec | None = None
    ) -> None:
        """Make one consumer if missing: an event consumer (`spec`) from the ack floor last
        seen, else from what the completion records cover; the desired-state feed as is."""
        js = self._connection.js
        try:
            try:
                info = await js.consumer_info(stream, durable)
            except nats.js.errors.NotFoundError:
                pass
            else:
                floor = info.ack_floor.stream_seq if info.ack_floor is not None else None
                self._floors[(stream, durable)] = floor or 0
                if info.num_pending or info.num_ack_pending:
                    self._has_csrs(spec, cluster)
                update = timing_update(info.config, spec.config()) if spec else None
                if update is not None:  # made with an older ack wait: change it in place
                    await js.add_consumer(stream, config=update)
                    log.info("consumer timing updated", durable=durable, ack_wait=update.ack_wait)
                return
            floor = self._floors.get((stream, durable))
            if spec is None:
                config = desired_consumer_config(cluster)
            elif floor is not None:
                config = spec.config(start_sequence=floor + 1)
            else:
                since = utcnow() - timedelta(seconds=RECORDS_TTL)
                config = spec.config(start_time=since)
            await js.add_consumer(stream, config=config)
        except (nats.errors.Error, TimeoutError) as exc:
            raise TransientError(
                f"cannot provision consumer {durable} for {cluster}: {type(exc).__name__} {exc}"
            ) from None
        log.info("consumer provisioned", stream=stream, durable=durable, after_floor=floor)
        self._has_csrs(spec, cluster)

    def _has_csrs(self, spec: EventConsumerSpec | None, cluster: str) -> None:
        """Tell the listeners that `cluster`'s CSR durable may hold CSRs (if `spec` is it)."""
        if spec is not None and spec.events == CSR_EVENTS:
            for listener in self._csr_listeners:
                listener(cluster)

    async def _next_due(self, stop: asyncio.Event) -> set[str]:
        """The clusters to look at next: one whose consumer was deleted, as soon as that is
        known; every known cluster when a sweep is due; none when `stop` is set."""
        woken = asyncio.ensure_future(self._wake.get())
        stopped = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait(
                (woken, stopped), timeout=self._sweep_interval, return_when="FIRST_COMPLETED"
            )
        finally:
            stopped.cancel()
            if not woken.done():
                woken.cancel()
        if woken.done() and not woken.cancelled():
            return {woken.result()}
        return set() if stop.is_set() else set(self._clusters)

    async def _check_or_retry(self, cluster: str) -> None:
        """`check`, and on a transient failure (e.g. the server still removing a consumer
        just deleted: "error creating store for consumer") again soon, 0.25 s doubling up to
        the sweep interval, rather than only at the next sweep."""
        try:
            await self.check(cluster)
        except TransientError as exc:
            failures = self._failures.get(cluster, 0) + 1
            self._failures[cluster] = failures
            delay = min(self._sweep_interval, 0.25 * 2 ** (failures - 1))
            log.warning("consumer upkeep failed", cluster=cluster, error=exc.message, retry=delay)
            asyncio.get_running_loop().call_later(delay, self._wake.put_nowait, cluster)
        else:
            self._failures.pop(cluster, None)

    async def run(self, stop: asyncio.Event) -> None:
        nc = self._connection.nc

        async def deleted(msg: Msg) -> None:
            # $JS.EVENT.ADVISORY.CONSUMER.DELETED.<stream>.<consumer>
            durable = msg.subject.rsplit(".", 1)[-1]
            _, _, cluster = durable.partition("-")
            if cluster in self._clusters:
                self._wake.put_nowait(cluster)

        sub = await nc.subscribe(f"{ADVISORY_DELETED}.>", cb=deleted)
        for cluster in self._initial:
            self._wake.put_nowait(cluster)
            self._clusters.add(cluster)
        try:
            while not stop.is_set():
                raise_if_cancelled()
                due = await self._next_due(stop)
                while not self._wake.empty():
                    due.add(self._wake.get_nowait())
                for cluster in sorted(due):
                    await self._check_or_retry(cluster)
                    raise_if_cancelled()  # `check` catches nats-py's errors
        finally:
            with contextlib.suppress(nats.errors.Error):
                await sub.unsubscribe()
