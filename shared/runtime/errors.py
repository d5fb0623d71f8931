"""One error hierarchy for the whole project: retry, give up, or the input is invalid.

    MeshtrustError                 every error meshtrust raises on purpose
    ├── TransientError             retry: the same request may succeed later (`retry_after`)
    │   ├── shared.k8s.Transient             (also a KubeError: 429, 5xx, timeouts)
    │   ├── shared.bus.PublishError          (also a BusError: not stored in time)
    │   └── shared.bus.RecordFailed          (also a BusError: completion not recorded)
    ├── PermanentError             give up: never going to work as asked (`reason`, `message`)
    ├── InvalidInput               the input itself is wrong; only a different input helps
    │   ├── shared.events.InvalidEvent, shared.events.InvalidName   (also ValueErrors)
    │   └── shared.pki.PkiError and its subclasses                  (`reason`, `message`)
    ├── shared.k8s.KubeError       the other API answers (NotFound, Conflict, Invalid, ...)
    └── shared.bus.BusError        the other bus failures (connect, read, ledger, RevisionMismatch)

The bus maps a handler's `TransientError` to a negative acknowledgement with a delay (its
`retry_after`, else the consumer's backoff: the message comes back) and `PermanentError` to a
termination (it never comes back; the reason is logged); the controller runner requeues a
`TransientError` rate-limited (at least its `retry_after`) and drops the key on a
`PermanentError`. Anything else that escapes is treated like a transient error with backoff and
logged with its traceback, so that no message or key is lost to a bug that a fix and a restart
would cure. `InvalidInput` is deliberately neither: whoever validates decides what an invalid
input means (the consumer terminates an `InvalidEvent`; the issuer denies a `CsrRejected`).
KubeError and BusError subclasses outside the kinds (`NotFound`, `Conflict`,
`RevisionMismatch`...) are outcomes the caller is expected to handle where it makes the call.

Messages of these exceptions are read by operators; they must never carry key material.
"""

from __future__ import annotations

__all__ = ["InvalidInput", "MeshtrustError", "PermanentError", "TransientError"]


class MeshtrustError(Exception):
    """The root of every error meshtrust raises on purpose (see the module docstring)."""


class TransientError(MeshtrustError):
    """Try again later; `retry_after` (seconds) overrides the caller's backoff when set."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after


class PermanentError(MeshtrustError):
    """Never going to work as asked: stop retrying. `reason` is a stable, machine-readable code."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message


class InvalidInput(MeshtrustError):
    """The input can never be used as it is (a malformed event, name, CSR, key or bundle); the
    subclasses carry what was wrong. Not retried, and not terminal by itself: the validating
    caller decides what it means."""
