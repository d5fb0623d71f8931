"""Our own error types for everything the Kubernetes API can answer.

`client.py` turns every failure of a request (a `Status` answer, a dropped connection, a timeout)
into one of these, so no other module ever sees a `kubernetes_asyncio` exception. The split that
matters to a caller is *transient* (`Transient`, a `shared.runtime.TransientError`: try again
later, the same request may succeed)
versus everything else (the request itself is wrong, or the world is not as the caller thought:
`NotFound`, `Conflict`, `Invalid`...), which retrying unchanged will not fix.

This module does not retry anything; it only classifies.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from shared.runtime.errors import MeshtrustError, TransientError

__all__ = [
    "AlreadyExists",
    "BadRequest",
    "Cause",
    "Conflict",
    "Forbidden",
    "Gone",
    "Invalid",
    "KubeError",
    "NotFound",
    "Transient",
    "error_from_status",
]


@dataclass(frozen=True, slots=True)
class Cause:
    """One entry of `Status.details.causes`: which field was wrong and why."""

    field: str
    reason: str
    message: str


class KubeError(MeshtrustError):
    """Any failed Kubernetes API request; subclasses say which kind of failure.

    `code` is the HTTP status (0 when no HTTP answer came back), `reason` the `Status.reason`
    (`NotFound`, `Conflict`, `Invalid`, ...), `message` the server's human-readable message.
    """

    def __init__(
        self,
        message: str,
        *,
        code: int = 0,
        reason: str = "",
        causes: tuple[Cause, ...] = (),
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.reason = reason
        self.causes = causes
        self.retry_after = retry_after

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code}, reason={self.reason!r}, {self.message!r})"


class NotFound(KubeError):
    """404: the object (or its namespace, or its kind) does not exist."""


class AlreadyExists(KubeError):
    """409 with reason AlreadyExists: a create found an object of that name."""


class Conflict(KubeError):
    """409: the write carried a stale resourceVersion (or another precondition failed).

    Re-read the object, re-apply the change to the fresh copy, and write again.
    """


class Invalid(KubeError):
    """422 (reason Invalid): the object failed validation; `causes` name the fields."""

    @property
    def fields(self) -> tuple[str, ...]:
        """The field paths the server rejected, e.g. `spec.hosts`."""
        return tuple(c.field for c in self.causes)


class BadRequest(KubeError):
    """400, 405, 406, 413, 415: the request itself is malformed for this server."""


class Forbidden(KubeError):
    """401 or 403: our credentials are missing, expired or lack the permission."""


class Gone(KubeError):
    """410: the resourceVersion (of a watch or a list continue token) was compacted away.

    The only cure is a fresh list; an informer relists on it.
    """


class Transient(KubeError, TransientError):
    """The server or the path to it is unwell: 429, 5xx, connection errors, timeouts.

    The same request may well succeed later; `retry_after` (seconds) is the server's hint
    (Retry-After header or `details.retryAfterSeconds`) when it gave one.
    """


_TRANSIENT_CODES = frozenset({429, 500, 502, 503, 504})
_BAD_REQUEST_CODES = frozenset({400, 405, 406, 413, 415})


def _parse_retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (kube-apiserver sends integer seconds, never a date)."""
    if value is None:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    return max(seconds, 0.0)


def error_from_status(
    code: int,
    status: Mapping[str, Any] | None,
    *,
    headers: Mapping[str, str] | None = None,
    fallback_message: str = "",
) -> KubeError:
    """Build the matching error from an HTTP code and the body's `Status` object (if any).

    Pure: used for HTTP answers and for `ERROR` events inside a watch stream alike.
    """
    body: Mapping[str, Any] = status if isinstance(status, Mapping) else {}
    reason = str(body.get("reason") or "")
    message = str(body.get("message") or fallback_message or f"HTTP {code}")
    details = body.get("details")
    details = details if isinstance(details, Mapping) else {}
    causes = tuple(
        Cause(
            field=str(c.get("field") or ""),
            reason=str(c.get("reason") or ""),
            message=str(c.get("message") or ""),
        )
        for c in details.get("causes") or ()
        if isinstance(c, Mapping)
    )
    retry_after = _parse_retry_after((headers or {}).get("Retry-After"))
    if retry_after is None and isinstance(details.get("retryAfterSeconds"), int | float):
        retry_after = float(details["retryAfterSeconds"])

    cls: type[KubeError]
    if code == 404:
        cls = NotFound
    elif code == 409:
        cls = AlreadyExists if reason == "AlreadyExists" else Conflict
    elif code == 422:
        cls = Invalid
    elif code == 410:
        cls = Gone
    elif code in (401, 403):
        cls = Forbidden
    elif code in _TRANSIENT_CODES:
        cls = Transient
    elif code in _BAD_REQUEST_CODES:
        cls = BadRequest
    else:
        cls = KubeError
    return cls(message, code=code, reason=reason, causes=causes, retry_after=retry_after)
