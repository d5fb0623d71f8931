"""Values read from the issuer's KV buckets (`meshtrust-desired`, `meshtrust-issued`).

A value that cannot be read (junk bytes, nested JSON, another schema, a PubAck) answers nothing:
it is logged with the reason and treated as absent, and the caller replaces it, by
compare-and-set on its revision, with the value it would have written anyway. It never counts as
a newer generation nor as an answer (docs/issuer.md).
"""

from __future__ import annotations

from typing import TypeVar

from shared.bus import KvEntry
from shared.events import Undecodable
from shared.runtime import get_logger

__all__ = ["readable"]

log = get_logger(__name__)

T = TypeVar("T")


def readable(entry: KvEntry, value: T | Undecodable, *, unreadable: str) -> T | None:
    """`value` (decoded from `entry`), or None when it is `Undecodable`: then logged as
    `unreadable`, with the entry's key and revision and why it cannot be read."""
    if isinstance(value, Undecodable):
        log.warning(
            unreadable,
            key=entry.key,
            revision=entry.revision,
            reason=value.reason,
            error=value.message,
        )
        return None
    return value
