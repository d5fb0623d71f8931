"""A flood made cheap: a cluster known to be over its rate is denied before any expensive work.

Once a cluster's CSR was denied `RateLimited` with a retry time T, no token of its bucket
(`quota.py`) is there before T: tokens only come back with time, and a denied take costs
nothing. Until T, then, a new CSR of that cluster can only be denied: `FloodGate` denies it
`RateLimited` with the same T at once, without reading the declaration and the signing Secret
from the API, parsing the CSR or checking its signature. What it still does: read the
issuance's `meshtrust-issued` record, so that a request answered before (a re-send of a signed
issuance) is answered from it as always, never denied; such requests take the full path.

A CSR that would have been denied for another reason is denied `RateLimited` instead: the
agent sends it again at T and then hears the real reason. That is the price of answering a
flood at the cost of a record read and a publish per CSR.

The gate learns T only from the denials the full path sends (`NotingAnswers`), so it never
denies what the bucket would have signed at the rate it had then; a rate raised meanwhile (a
ClusterRegistration's quota) applies from T on. Per process, as the buckets are.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from services.issuer.answers import Answers
from shared.api import reasons
from shared.api.v1alpha2 import IssuedCertificate
from shared.bus import Bucket
from shared.controller.policy import Finding
from shared.events import CsrRequested
from shared.runtime.clock import Clock, utcnow

__all__ = ["FloodGate", "NotingAnswers", "OverRate"]


class OverRate:
    """Clusters with no token before a known time, and the denial that said so (its reason
    names the rate that applies: the issuer's default or the cluster's own)."""

    def __init__(self) -> None:
        self._until: dict[str, tuple[datetime, Finding]] = {}

    def note(self, cluster: str, until: datetime, verdict: Finding) -> None:
        known = self._until.get(cluster)
        if known is None or known[0] < until:
            self._until[cluster] = (until, verdict)

    def until(self, cluster: str, now: datetime) -> tuple[datetime, Finding] | None:
        """When `cluster` may have a token again and why not before, if that is after `now`;
        else None."""
        known = self._until.get(cluster)
        if known is None:
            return None
        if known[0] <= now:
            del self._until[cluster]
            return None
        return known


@dataclass(frozen=True, kw_only=True, slots=True)
class NotingAnswers(Answers):
    """`Answers` that note every `RateLimited` denial's retry time in `over_rate`."""

    over_rate: OverRate = field(default_factory=OverRate)

    async def deny(
        self,
        event: CsrRequested,
        verdict: Finding,
        declaration: IssuedCertificate | None,
        *,
        retry_after: datetime | None = None,
    ) -> None:
        if verdict.reason == reasons.RATE_LIMITED and retry_after is not None:
            self.over_rate.note(event.cluster, retry_after, verdict)
        # Not super(): a slotted dataclass is a new class, which zero-argument super() misses.
        await Answers.deny(self, event, verdict, declaration, retry_after=retry_after)


@dataclass(frozen=True, kw_only=True, slots=True)
class FloodGate:
    """Denies a CSR of a cluster over its rate at the cost of a record read and a publish."""

    issued: Bucket
    answers: NotingAnswers
    clock: Clock = utcnow

    async def answered(self, event: CsrRequested, key: str) -> bool:
        """True when `event` was denied here; False: it takes the full path."""
        known = self.answers.over_rate.until(event.cluster, self.clock())
        if known is None or await self.issued.get(key) is not None:
            return False
        until, verdict = known  # the same answer as the full path's, to the letter
        await self.answers.deny(event, verdict, None, retry_after=until)
        return True
