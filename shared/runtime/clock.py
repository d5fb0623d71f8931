"""The wall clock, said once: `utcnow()` and the `Clock` type of an injected clock.

Decisions never read the clock themselves: a reconciler or handler is given a `Clock` (this
`utcnow` in production, a fake in tests) and passes `now` down to its pure policies. Here, in
`shared.runtime`, because every service and several shared modules need the same timezone-aware
UTC time and the same type for "a clock you can replace".

Deliberately not here: monotonic time (deadlines and backoff use `time.monotonic` directly) and
any formatting (RFC 3339 is the wire models' job).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

__all__ = ["Clock", "utcnow"]

Clock = Callable[[], datetime]
"""A source of the current time, timezone-aware (UTC)."""


def utcnow() -> datetime:
    """Now, timezone-aware, in UTC."""
    return datetime.now(UTC)
