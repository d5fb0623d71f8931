"""A durable consumer's description: its settings, the JetStream configuration they make, what a
handler is given, and the backoff of a failed delivery. All pure; `shared.bus.consuming` runs
the consumer, `shared.bus.fleet` makes the clusters' consumers from the same configuration.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime

from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from shared.bus.completions import DEFAULT_LINGER, DEFAULT_TTL
from shared.events import DEFAULT_MAX_BYTES, Event, EventType


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
    max_in_flight: int = 128
    """Handlers running at once (two fetches' worth, so fetching overlaps the work); JetStream's
    max_ack_pending is set a little above it. Lower it where each handler is heavy."""
    ack_wait: float = 5.0
    """Redelivery after this long without an ack; a message being handled is kept alive with
    `in_progress()` every third of it, so this bounds only how long a crashed consumer's
    messages wait (docs/bus.md, "Ack wait and crash recovery")."""
    max_deliver: int = 100
    """Deliveries before JetStream gives up on a message (transient errors only get here)."""
    max_bytes: int = DEFAULT_MAX_BYTES
    """Larger messages are terminated unread."""
    fetch_timeout: float = 1.0
    """How long one fetch waits when nothing is pending (a message, a stop and a reconnect end
    the wait at once: `shared.bus.consuming`)."""
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
    completed_ttl: float = DEFAULT_TTL
    """How long completion records are kept, if this consumer creates their stream."""
    record_linger: float = DEFAULT_LINGER
    """How long a completion record waits for others to share its write (and the ack with it):
    a busy consumer then writes one record per few milliseconds rather than one per message."""
    max_ack_pending: int | None = None
    """JetStream's bound on unacknowledged messages; None: a little above `max_in_flight`."""
    info_refresh: float = 10.0
    """How often a consumer that may ask JetStream about its durable reads its ack floor and
    pending count (`meshtrust_bus_consumer_pending_messages`)."""
    extra_config: dict[str, object] = field(default_factory=dict)


def durable_config(
    settings: ConsumerSettings,
    *,
    start_sequence: int | None = None,
    start_time: datetime | None = None,
) -> ConsumerConfig:
    """The durable pull consumer `settings` describe; from `start_sequence` (or `start_time`)
    when it is made again after it disappeared (what was handled before is in its completion
    records)."""
    s = settings
    policy = DeliverPolicy.ALL
    if start_sequence:
        policy = DeliverPolicy.BY_START_SEQUENCE
    elif start_time is not None:
        policy = DeliverPolicy.BY_START_TIME
    return ConsumerConfig(
        name=s.durable,
        durable_name=s.durable,
        filter_subjects=list(s.filter_subjects),
        deliver_policy=policy,
        opt_start_seq=start_sequence or None,
        opt_start_time=start_time,
        ack_policy=AckPolicy.EXPLICIT,
        ack_wait=s.ack_wait,
        max_deliver=s.max_deliver,
        max_ack_pending=s.max_ack_pending or s.max_in_flight + s.batch,
        **s.extra_config,  # type: ignore[arg-type]
    )


TIMING_FIELDS = ("ack_wait", "max_deliver", "max_ack_pending")
"""What a durable's configuration may change in place and a service's settings decide."""


def timing_update(existing: ConsumerConfig, wanted: ConsumerConfig) -> ConsumerConfig | None:
    """`existing` (as the server has it) with `wanted`'s timing fields, when any differs: the
    configuration to update the durable with in place. The rest of it is kept as the server has
    it, since JetStream refuses to change some of it (a durable re-created from a start sequence
    has another deliver policy). None when nothing differs."""
    changes: dict[str, object] = {}
    for name in TIMING_FIELDS:
        have, want = getattr(existing, name), getattr(wanted, name)
        if want is not None and have != want:
            changes[name] = want
    return existing.evolve(**changes) if changes else None


def nak_delay(num_delivered: int, *, initial: float, cap: float, rng: random.Random) -> float:
    """Capped exponential backoff with +-20 % jitter (pure; unit-tested)."""
    base = min(cap, initial * 2.0 ** max(0, num_delivered - 1))
    return base * rng.uniform(0.8, 1.2)
