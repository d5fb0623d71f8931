"""Fleet-wide re-issues in waves: at most `MESHTRUST_ISSUER_REISSUE_WAVE` clusters at once.

Publishing a changed desired IssuedCertificate makes its cluster's agent re-issue: a new key,
a new intermediate, and (with a PodBounceDirective) its control plane restarted. A change that
reaches many declarations at once (a new signing intermediate in a shared signing Secret, a
mass edit of the declarations) would otherwise restart every cluster's istiod in the same
second, and a bad change would break them all. So the issuer publishes such a change to at most
`limit` clusters at a time: the next cluster's change is published only when fewer than `limit`
clusters are *re-issuing*. A cluster is re-issuing while any of its declarations' mirrored state
is PENDING, REQUESTED or ISSUED, or FAILED by its agent (a failing cluster keeps its slot: a
change that breaks clusters stops after `limit` of them instead of going on through the fleet),
or while a change published to it has not yet shown up in its agent's reports (`settle`).

What is gated: a *re-issue*, i.e. a new generation or a new signing chain for a declaration
that has been issued before (its mirrored status has a serial). Not gated: a first issuance (a
new cluster's or declaration's), the agents' own renewals (spread by their issue times), and a
root rotation's steps, which have their own waves (`rotation.py`; their desired objects carry a
trust epoch). Leaving a rotation (its resource deleted: the epoch cleared) is a re-issue.
A declaration deferred here that a rotation's step then reaches is published at once with the
step's epoch (the reconciler asks the rotations before `holds`): a wave of ordinary re-issues
never holds a rotation up.

A deferred declaration is looked at again when any declaration's status changes and a slot is
free (`released`, an informer mapper), and every `RECHECK` seconds in any case. The count is
per issuer replica: with n replicas a change may reach up to n x `limit` clusters at once
(docs/issuer.md, "Re-issue waves"). `limit` 0 turns the gate off.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from services.issuer.mirror import ISSUER_ERROR_PREFIX
from shared.api.meta import ObjectKey
from shared.events.desired import DesiredObject
from shared.k8s.informer import InformerEvent
from shared.runtime.clock import Clock, utcnow
from shared.runtime.logging import get_logger

log = get_logger(__name__)

RECHECK = 15.0
"""Seconds after which a deferred declaration is looked at again even if no status changed."""

_IN_FLIGHT = frozenset({"PENDING", "REQUESTED", "ISSUED"})


def is_reissue(
    existing: DesiredObject | None, desired: DesiredObject, status: Mapping[str, Any]
) -> bool:
    """Whether publishing ``desired`` over ``existing`` makes an issued certificate be replaced."""
    if existing is None or desired.trust_epoch is not None or not status.get("serialNumber"):
        return False
    if existing.uid != desired.uid:
        return False
    return (existing.generation, existing.signing_chain_fingerprint, existing.trust_epoch) != (
        desired.generation,
        desired.signing_chain_fingerprint,
        None,  # leaving a rotation (its resource deleted) re-issues too
    )


@dataclass
class ReissueWaves:
    """The gate. `admit` is called by the reconciler before publishing a re-issue."""

    limit: int
    settle: dt.timedelta = dt.timedelta(minutes=5)
    clock: Clock = utcnow
    _admitted: dict[ObjectKey, tuple[dt.datetime, str | None]] = field(default_factory=dict)
    _deferred: set[ObjectKey] = field(default_factory=set)

    def admit(self, key: ObjectKey, status: Mapping[str, Any], declarations: Iterable[Any]) -> bool:
        """True: publish now (the slot is taken). False: deferred; `released` brings it back."""
        if self.limit <= 0:
            return True
        busy = self.busy(declarations)
        if key.namespace not in busy and len(busy) >= self.limit:
            if key not in self._deferred:
                log.info(
                    "re-issue deferred: the wave is full",
                    key=str(key),
                    reissuing=len(busy),
                    limit=self.limit,
                    clusters=sorted(busy)[:10],
                )
            self._deferred.add(key)
            return False
        self._deferred.discard(key)
        self._admitted[key] = (self.clock(), status.get("issuanceId"))
        return True

    def holds(self, key: ObjectKey, declarations: Callable[[], Iterable[Any]]) -> bool:
        """True while `key`, deferred, would still be deferred: its reconcile can requeue before
        reading anything (a thousand deferred declarations rechecked every `RECHECK` seconds
        would otherwise each read the signing Secret, the bucket and the live declaration).
        `declarations` (the informer's `items`) is called only for a deferred key."""
        if key not in self._deferred or self.limit <= 0:
            return False
        busy = self.busy(declarations())
        return key.namespace not in busy and len(busy) >= self.limit

    def forget(self, key: ObjectKey) -> None:
        """`key` is no longer deferred: a rotation's step reached it (its waves are the
        rotation's own), or it is published by another way."""
        self._deferred.discard(key)

    def busy(self, declarations: Iterable[Any]) -> set[str]:
        """The clusters re-issuing now (the informer's declarations, as raw objects)."""
        now = self.clock()
        seen: set[ObjectKey] = set()
        busy: set[str] = set()
        for obj in declarations:
            meta = obj.get("metadata") or {}
            key = ObjectKey(meta.get("namespace") or "", meta.get("name") or "")
            seen.add(key)
            status = obj.get("status") or {}
            state, error = status.get("state", "PENDING"), status.get("error") or ""
            if state in _IN_FLIGHT or (
                state == "FAILED" and not error.startswith(ISSUER_ERROR_PREFIX)
            ):
                busy.add(key.namespace)
            elif (admitted := self._admitted.get(key)) is not None:
                at, issuance = admitted
                if status.get("issuanceId") == issuance and now - at < self.settle:
                    busy.add(key.namespace)  # published, not yet reported by its agent
                else:
                    del self._admitted[key]
        for gone in set(self._admitted) - seen:
            del self._admitted[gone]
        return busy

    def released(self, declarations: Iterable[Any]) -> list[ObjectKey]:
        """The deferred declarations a free slot may take now (all of a busy cluster's)."""
        if not self._deferred or self.limit <= 0:
            return []
        busy = self.busy(declarations)
        free = self.limit - len(busy)
        woken = [key for key in self._deferred if key.namespace in busy]
        clusters = sorted({key.namespace for key in self._deferred} - busy)[: max(free, 0)]
        woken += [key for key in self._deferred if key.namespace in clusters]
        return woken

    def mapper(self, declarations: Any) -> Any:
        """An informer mapper: on any declaration event, the deferred keys a slot may take."""

        def released(event: InformerEvent) -> list[ObjectKey]:
            del event
            return self.released(declarations.items())

        return released
