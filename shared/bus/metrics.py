"""The consumers' metrics: handler outcomes, redeliveries and messages in flight, by durable.

One `ConsumerMetrics` per registry (a `Bus` makes it from the registry it was given): every
consumer of that bus shares it, labelled by its durable name (a bounded set: one per consumer
the service runs). Outcomes are what the server was told: `ack` (handled, or a redelivery of a
message handled before), `nak` (a transient failure or a bug: it comes back) and `term` (a
permanent failure, or a message that can never be handled).

`meshtrust_bus_consumer_pending_messages{durable}` is the durable's lag: messages its filter
matches that were not yet delivered. It is read from each delivery's metadata (the server's
count when it sent the message; 0 after a fetch found nothing), which needs no API request, so
a cluster's identity, which may not ask JetStream about its durable, has it too; where the
identity may ask, the consumer's info corrects it every `info_refresh` (10 s).
"""

from __future__ import annotations

from typing import Literal

from prometheus_client import CollectorRegistry, Counter, Gauge

Outcome = Literal["ack", "nak", "term"]


class ConsumerMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.handled = Counter(
            "meshtrust_bus_messages_handled",
            "Messages a consumer answered, by what it told the server (ack, nak, term).",
            ["durable", "outcome"],
            registry=registry,
        )
        self.redelivered = Counter(
            "meshtrust_bus_redeliveries",
            "Deliveries of a message that had been delivered before (num_delivered > 1).",
            ["durable"],
            registry=registry,
        )
        self.in_flight = Gauge(
            "meshtrust_bus_messages_in_flight",
            "Messages fetched and not yet answered (handlers running).",
            ["durable"],
            registry=registry,
        )

        self.pending = Gauge(
            "meshtrust_bus_consumer_pending_messages",
            "Messages of the durable not yet delivered (its lag), as the server last counted.",
            ["durable"],
            registry=registry,
        )

    def outcome(self, durable: str, outcome: Outcome) -> None:
        self.handled.labels(durable=durable, outcome=outcome).inc()
