"""NATS subjects of the bus: `meshtrust.v1.<cluster>.<event>`.

The cluster token comes right after the version, so a per-cluster NATS permission
(`meshtrust.v1.east.>`) covers exactly one cluster's events, and the subject is proof of the
sender's cluster.
"""

from __future__ import annotations

from shared.events.enums import EventType
from shared.events.names import InvalidName, check_cluster_name

PREFIX = "meshtrust.v1"
STREAM_SUBJECTS = f"{PREFIX}.>"
"""What the MESHTRUST stream captures."""


def subject(cluster: str, event: EventType) -> str:
    """The subject on which `cluster` publishes `event`."""
    return f"{PREFIX}.{check_cluster_name(cluster)}.{event.value}"


def any_cluster(event: EventType) -> str:
    """A filter matching `event` from every cluster, e.g. `meshtrust.v1.*.csr.requested`."""
    return f"{PREFIX}.*.{event.value}"


def cluster_events(cluster: str) -> str:
    """A filter matching every event of one cluster: `meshtrust.v1.<cluster>.>`."""
    return f"{PREFIX}.{check_cluster_name(cluster)}.>"


def parse_subject(value: str) -> tuple[str, EventType]:
    """Split a subject into (cluster, event type); `InvalidName` if it is not one of ours."""
    head = PREFIX + "."
    if not value.startswith(head):
        raise InvalidName(f"subject {value!r} is not under {PREFIX}")
    cluster, _, rest = value[len(head) :].partition(".")
    check_cluster_name(cluster)
    try:
        event = EventType(rest)
    except ValueError:
        raise InvalidName(f"subject {value!r} names no known event type") from None
    return cluster, event
