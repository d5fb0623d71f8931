"""Fault injection: what tests use to make the emulator misbehave the way real clusters do.

- `close_watches()` ends every open watch stream now (as an apiserver restart or a load
  balancer idle timeout does); clients must re-watch from their last resourceVersion.
- `fail_next(n, status, path_contains, retry_after)` answers the next n matching requests
  with a Status error: 500 InternalError, or 429 TooManyRequests with `Retry-After`.
- `compact()` forgets the watch history (etcd compaction): older resourceVersions get 410.
- `set_latency(seconds)` delays every request.
Admin requests (`/_emulator/...`) are never delayed or failed.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import errors
from .store import Store


@dataclass
class _Failure:
    remaining: int
    status: int
    path_contains: str | None
    retry_after: int | None


class Faults:
    def __init__(self, store: Store) -> None:
        self._store = store
        self._failures: list[_Failure] = []
        self.latency = 0.0  # seconds added to every request

    def close_watches(self) -> int:
        """End every open watch stream; returns how many were open."""
        return self._store.close_watches()

    def fail_next(
        self,
        n: int,
        status: int = 500,
        path_contains: str | None = None,
        retry_after: int | None = None,
    ) -> None:
        if status not in (500, 429, 503, 504):
            raise ValueError(f"unsupported fault status {status}")
        if status == 429 and retry_after is None:
            retry_after = 1
        self._failures.append(_Failure(n, status, path_contains, retry_after))

    def compact(self) -> None:
        self._store.compact()

    def set_latency(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("latency must be >= 0")
        self.latency = seconds

    def clear(self) -> None:
        self._failures.clear()
        self.latency = 0.0

    def take(self, path_qs: str) -> errors.ApiError | None:
        """The injected error for this request, if any (consumes one from the budget)."""
        for f in self._failures:
            if f.remaining > 0 and (f.path_contains is None or f.path_contains in path_qs):
                f.remaining -= 1
                if f.remaining == 0:
                    self._failures.remove(f)
                return _error(f)
        return None


def _error(f: _Failure) -> errors.ApiError:
    if f.status == 429:
        return errors.too_many_requests(f.retry_after or 1)
    if f.status == 503:
        e = errors.ApiError(
            503, "ServiceUnavailable", "the server is currently unable to handle the request", {}
        )
        if f.retry_after is not None:
            e.headers["Retry-After"] = str(f.retry_after)
            e.details = {"retryAfterSeconds": f.retry_after}
        return e
    if f.status == 504:
        return errors.ApiError(
            504,
            "Timeout",
            "the server was unable to return a response in the time allotted, but may still be "
            "processing the request",
            {},
        )
    e = errors.internal("injected fault")
    if f.retry_after is not None:
        e.headers["Retry-After"] = str(f.retry_after)
    return e
