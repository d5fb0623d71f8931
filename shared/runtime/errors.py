"""The two kinds of failure a handler or reconciler can report.

The bus maps `TransientError` to a negative acknowledgement with a delay (the message comes back),
and `PermanentError` to a termination (it never comes back; the reason is logged). Anything else
that escapes a handler is a bug: it is treated like a transient error with backoff, so that no
message is lost to a bug that a fix and a restart would cure.

Messages of these exceptions are read by operators; they must never carry key material.
"""

from __future__ import annotations


class TransientError(Exception):
    """Try again later; `retry_after` (seconds) overrides the caller's backoff when set."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after


class PermanentError(Exception):
    """Never going to work as asked: stop retrying. `reason` is a stable, machine-readable code."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message
