"""One signature per issuance across replicas: a replica claims an issuance before it signs.

Replicas share every cluster's CSRs, and one issuance can reach two of them at once (the
agent's re-send while the first copy is being signed; a copy redelivered from a replica that
stalled). The per-process lock (`handlers.py`) orders the copies inside one replica; across
replicas, the issuance's entry in `meshtrust-issued` does, before anything is signed:

1. `create` (if absent) an `IssuanceClaim` (this replica, a lease of `claim_lease` seconds).
2. Found instead: a readable record answers the issuance (no claim, nothing signed: the
   caller sends that certificate again). A claim of another replica whose lease runs: the
   copy waits, `TransientError` with `retry_after` (a nak with that delay; it comes back to
   any replica, which then finds the record, or the claim again, or the claim expired). A
   claim whose lease is over (its holder crashed), a claim of this replica's name (from an
   earlier life: a living copy in this process would hold the lock) or an unreadable entry:
   replaced by compare-and-set on its revision; a lost compare-and-set looks again.
3. While the work runs, the claim is renewed every third of the lease (compare-and-set), so a
   slow signature (a slow API, a busy executor) keeps it; renewal stops at the first lost
   compare-and-set (the record replaced the claim) or when the work ends.
4. The work signs, and `Answers` stores the record over the claim by compare-and-set and says
   so (`settle`). If the work ended without a record (a denial, an error), the claim is
   deleted by compare-and-set, so the next copy, on any replica, goes on at once.

A replica cancelled mid-work (a crash, or a stop whose grace ran out) leaves its claims: they
are taken over once their lease is over. Clocks: the lease is written with the holder's clock
and read with the others', so the replicas' clock skew must stay well below the lease.

Deliberately not here: deciding and signing (`signing.py`), storing the record (`answers.py`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from services.issuer.issued import IssuanceClaim, IssuedRecord, read_entry
from services.issuer.metrics import IssuerMetrics
from shared.bus import Bucket, RevisionMismatch
from shared.events import CsrRequested
from shared.runtime import TransientError, get_logger
from shared.runtime.clock import Clock, utcnow

__all__ = ["Answered", "Claims", "Take", "Wait", "claim_step"]

log = get_logger(__name__)

_ATTEMPTS = 5
"""Compare-and-set rounds to take a claim before giving up for now (nak)."""

_SHORTEST_WAIT = 0.05
"""Seconds: a claim about to expire is looked at again soon, not in a busy loop."""


@dataclass(frozen=True, slots=True)
class Answered:
    """A readable record answers the issuance: nothing to claim or sign."""


@dataclass(frozen=True, slots=True)
class Wait:
    """Another replica holds a running claim: come back in `seconds`."""

    holder: str
    seconds: float


@dataclass(frozen=True, slots=True)
class Take:
    """Replace the entry with our claim: `why` is `unreadable`, `ours` or `expired`."""

    why: str
    holder: str | None = None


Step = Answered | Wait | Take


def claim_step(
    found: IssuedRecord | IssuanceClaim | None, *, me: str, now: datetime, lease: float
) -> Step:
    """What to do with an issuance's entry (pure). `found`: what it holds (None: unreadable).
    A wait is at most a third of the lease: a living holder renews that often, so the copy
    comes back soon after the record is there, and a dead one's claim soon after it expires."""
    if isinstance(found, IssuedRecord):
        return Answered()
    if found is None:
        return Take("unreadable")
    if found.claimed_by == me:
        return Take("ours", me)
    left = (found.lease_until - now).total_seconds()
    if left <= 0:
        return Take("expired", found.claimed_by)
    return Wait(found.claimed_by, max(_SHORTEST_WAIT, min(left, lease / 3)))


@dataclass(slots=True)
class _Held:
    """A claim this replica holds: its key, its current revision, whether a record replaced it."""

    key: str
    revision: int
    settled: bool = False


class Claims:
    """This replica's claims on issuances in `meshtrust-issued` (see the module docstring)."""

    def __init__(
        self,
        *,
        issued: Bucket,
        instance: str,
        lease: float,
        clock: Clock = utcnow,
        metrics: IssuerMetrics | None = None,
    ) -> None:
        self._issued = issued
        self._me = instance
        self._lease = lease
        self._clock = clock
        self._metrics = metrics
        self._held: dict[str, _Held] = {}
        """By key; one per issuance, as the caller holds the issuance's lock."""

    async def run(self, event: CsrRequested, key: str, work: Callable[[], Awaitable[None]]) -> None:
        """Run `work` (authorise, sign, answer) holding the issuance's claim; run it without
        one when a record answers the issuance. Raises `TransientError` (retry_after) while
        another replica holds the claim; re-raises what `work` raises."""
        held = await self._take(event, key)
        if held is None:
            await work()
            return
        self._held[key] = held
        failed: Exception | None = None
        try:
            async with asyncio.TaskGroup() as group:
                renewal = group.create_task(self._renew(held), name=f"claim-renewal:{key}")
                try:
                    await work()
                except Exception as exc:  # re-raised below, outside the group (not wrapped)
                    failed = exc
                finally:
                    renewal.cancel()
        finally:
            del self._held[key]
        # Cancelled (a crash, a stop past its grace): no release; the lease ends the claim.
        if not held.settled:
            await self._release(held)
        if failed is not None:
            raise failed

    def settle(self, key: str) -> None:
        """The issuance's record replaced this replica's claim (`Answers` stored it)."""
        held = self._held.get(key)
        if held is not None:
            held.settled = True

    async def _take(self, event: CsrRequested, key: str) -> _Held | None:
        for _ in range(_ATTEMPTS):
            try:
                return _Held(key, await self._issued.create(key, self._claim()))
            except RevisionMismatch:
                entry = await self._issued.get(key)
            if entry is None:
                continue  # released meanwhile: create again
            step = claim_step(read_entry(entry), me=self._me, now=self._clock(), lease=self._lease)
            if isinstance(step, Answered):
                return None
            if isinstance(step, Wait):
                if self._metrics is not None:
                    self._metrics.claim_waits.labels(event.cluster).inc()
                raise TransientError(
                    f"issuance {event.issuance} is being signed by {step.holder}",
                    retry_after=step.seconds,
                )
            try:
                revision = await self._issued.update(key, self._claim(), last=entry.revision)
            except RevisionMismatch:
                continue
            self._took(event, step, entry.revision)
            return _Held(key, revision)
        raise TransientError(f"the claim on issuance {event.issuance} keeps changing")

    def _took(self, event: CsrRequested, step: Take, replaced: int) -> None:
        if step.why == "expired":
            log.warning(
                "claim taken over: its holder did not renew it in time",
                holder=step.holder,
                lease=self._lease,
            )
            if self._metrics is not None:
                self._metrics.claims_taken_over.labels(event.cluster).inc()
        elif step.why == "unreadable":
            # its claim is replaced by the record in turn: the repair is this replacement
            log.warning("unreadable issued record replaced", replaced_revision=replaced)

    async def _renew(self, held: _Held) -> None:
        """Renew the claim every third of the lease until the work ends (cancelled) or a
        compare-and-set is lost (the record replaced it). Never raises: a failed renewal is
        logged and tried again at the next round."""
        while True:
            await asyncio.sleep(self._lease / 3)
            if held.settled:  # set by `settle` while this slept
                return
            try:
                held.revision = await self._issued.update(
                    held.key, self._claim(), last=held.revision
                )
            except RevisionMismatch:
                return
            except TransientError as exc:
                log.warning("claim not renewed", error=exc.message)

    async def _release(self, held: _Held) -> None:
        """Delete the claim (nothing was recorded): best effort, the lease ends it otherwise."""
        try:
            await self._issued.delete(held.key, last=held.revision)
        except RevisionMismatch:
            pass  # replaced meanwhile (a record, or a taker): not ours to delete any more
        except TransientError as exc:
            log.warning("claim not released; it ends with its lease", error=exc.message)

    def _claim(self) -> bytes:
        now = self._clock()
        return (
            IssuanceClaim(
                claimed_by=self._me,
                claimed_at=now.replace(microsecond=0),
                lease_until=now + timedelta(seconds=self._lease),
            )
            .model_dump_json()
            .encode()
        )
