"""A policy chain: an ordered list of small pure checks whose first finding decides.

The model is cert-manager's `internal/controller/certificates/policies.Chain`: each check looks
at one gathered input and either finds something (a stable CamelCase `reason` from
`shared.api.reasons` and a `message` for operators) or finds nothing (None); `Chain.evaluate`
returns the first finding, so the order of the checks is the order of precedence. A check that
needs the time is made by a function given `now` when the chain is built (`renewal_due(now)`),
never handed a clock on every call, so every check is a plain `check(input)` and every row of a
table test is one input.

Here, in shared, because the agent and the issuer (and any later controller) decide this way
and should not each grow their own chain type. Deliberately not here: what a finding means to
the caller (re-issue, deny, fail) and any I/O: checks must not read clocks, the network or the
Kubernetes API.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Generic, TypeVar

__all__ = ["Chain", "Check", "Finding"]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Finding:
    """What a check found: `reason` is a stable CamelCase code (status, Events, metric labels),
    `message` is for people and never quotes key material."""

    reason: str
    message: str


Check = Callable[[T], Finding | None]
"""One policy: a finding, or None when it has nothing to say about the input."""


class Chain(Generic[T]):
    """Checks run in order; the first finding wins and the rest are not run."""

    __slots__ = ("_checks",)

    def __init__(self, *checks: Check[T]) -> None:
        self._checks = checks

    def evaluate(self, value: T) -> Finding | None:
        """The first check's finding, or None when no check finds anything."""
        for check in self._checks:
            finding = check(value)
            if finding is not None:
                return finding
        return None

    def __iter__(self) -> Iterator[Check[T]]:
        return iter(self._checks)

    def __len__(self) -> int:
        return len(self._checks)

    def __getitem__(self, index: int) -> Check[T]:
        return self._checks[index]
