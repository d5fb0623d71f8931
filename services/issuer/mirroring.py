"""The status mirror's procedure: agents' `status.changed` written onto their declarations.

`StatusMirror.mirror(event)` writes the status `mirror.mirrored_status` decides (pure) onto the
management IssuedCertificate `<cluster>/<name>`, by `update_model_status` (re-read and retried
on a conflict). Reports of one declaration are written one write at a time, and the reports that
arrive while a write of their declaration is under way are folded into the next write, in
arrival order (`mirrored_status` is a fold: the status it leaves is the one the reports written
one by one would leave). A report of a passing step (ISSUED of a declaration without a
PodBounceDirective, which the agent leaves for FINISHED by itself within milliseconds) waits up
to `PASSING_LINGER_SECONDS` for the next report before its write, so that such an issuance costs
two status writes (REQUESTED, then FINISHED), not three.
Each report returns only once a write that included it succeeded, and fails (the consumer naks)
with it otherwise: none is acked unwritten. Events: only a state reached that a management-side
user acts on (`mirror.announced`: FINISHED, FAILED), one per state and issuance.

A declaration that is gone or unreadable has nothing to mirror onto (logged); other API errors
are transient. Deliberately not here: which reports to take (`handlers.StatusHandler`) and the
decision itself (`mirror.py`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import reduce
from typing import Any

from pydantic import ValidationError

from services.issuer.mirror import announced, mirrored_status
from shared.api.meta import ObjectKey
from shared.api.v1alpha2 import IssuedCertificate, IssuedCertificateStatus, State
from shared.events import CertificateState, StatusChanged
from shared.k8s import EventRecorder, KubeClient, KubeError, NotFound, update_model_status
from shared.k8s.events import transition_message, transition_reason
from shared.k8s.status import StatusWrite
from shared.runtime import TransientError, get_logger
from shared.runtime.locks import KeyedLocks

__all__ = ["PASSING_LINGER_SECONDS", "StatusMirror", "folded_status", "mirror_reports"]

log = get_logger(__name__)

PASSING_LINGER_SECONDS = 0.3
"""How long a report of a passing step (ISSUED) waits for the next report of its declaration,
when that declaration names no PodBounceDirective.

Without a directive, ISSUED lasts only until the agent's next pass, a few milliseconds of its
own work: its FINISHED usually follows within this wait, joins the write, and the declaration
goes from REQUESTED to FINISHED in one write (the re-issue waves count both REQUESTED and
ISSUED as re-issuing, so nothing there waits longer). A report that arrives wakes the write at
once; if none comes, ISSUED is written this much later. With a directive, FINISHED waits for
the bounce (seconds): ISSUED is written at once, since a wait would only hold the report."""

PASSING = frozenset({CertificateState.ISSUED})

Cached = Callable[[ObjectKey], Mapping[str, Any] | None]


def folded_status(
    current: IssuedCertificateStatus, reports: Sequence[StatusChanged]
) -> IssuedCertificateStatus:
    """`reports` applied to `current` in order, as one write after another would."""
    return reduce(
        lambda status, event: mirrored_status(status, event.data, issuance=event.issuance),
        reports,
        current,
    )


async def mirror_reports(
    kube: KubeClient,
    key: ObjectKey,
    reports: Sequence[StatusChanged],
    *,
    recorder: EventRecorder,
    current: Mapping[str, Any] | None = None,
) -> None:
    """Mirror `reports` (all of declaration `key`) in one status write; `current`: a cached
    copy that saves the read before the write (the write carries its resourceVersion: a stale
    copy is a 409, then the declaration is read fresh)."""
    try:
        written, write = await update_model_status(
            kube,
            IssuedCertificate,
            key.name,
            namespace=key.namespace,
            mutate=lambda ic: folded_status(ic.status, reports),
            current=current,
        )
    except NotFound:
        log.info("status for a declaration that is gone; nothing to mirror", name=key.name)
        return
    except ValidationError:
        log.warning("declaration unreadable; status not mirrored", name=key.name)
        return
    except KubeError as exc:
        raise TransientError(f"mirroring status of {key}: {exc}") from None
    if write.changed:
        state = written.status.state.value
        log.info("status mirrored", name=key.name, state=state, reports=len(reports))
        await _announce(recorder, written, write)


async def _announce(recorder: EventRecorder, after: IssuedCertificate, write: StatusWrite) -> None:
    """The Event of a state reached (`mirror.announced`), best effort."""
    try:
        before: IssuedCertificateStatus | None = IssuedCertificateStatus.model_validate(
            write.before
        )
    except ValidationError:  # a status we could not read was replaced
        before = None
    status = after.status
    if announced(before, status):
        await recorder.record(
            after,
            type="Warning" if status.state is State.FAILED else "Normal",
            reason=transition_reason(status.state),
            message=transition_message(status.state, status.error),
        )


@dataclass
class _Batch:
    """Reports of one declaration waiting for the same write."""

    reports: list[StatusChanged] = field(default_factory=list)
    done: asyncio.Future[None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )
    joined: asyncio.Event = field(default_factory=asyncio.Event)
    """Set when a report joins: a lingering write goes on at once."""

    def passing(self) -> bool:
        return all(event.data.state in PASSING for event in self.reports)


class StatusMirror:
    """Writes reports per declaration, one write at a time, folding those that wait."""

    def __init__(
        self,
        kube: KubeClient,
        *,
        recorder: EventRecorder,
        cached: Cached | None = None,
        linger: float = PASSING_LINGER_SECONDS,
    ) -> None:
        self._kube = kube
        self._linger = linger
        self._recorder = recorder
        self._cached = cached
        self._writes: KeyedLocks[ObjectKey] = KeyedLocks()
        self._waiting: dict[ObjectKey, _Batch] = {}
        self.writes = 0
        """Status writes attempted (one per batch), for tests and metrics."""

    async def mirror(self, event: StatusChanged) -> None:
        """Return once a write that included `event` succeeded (or had nothing to write on)."""
        key = ObjectKey(event.cluster, event.data.name)
        batch = self._waiting.get(key)
        if batch is not None:  # a write of this declaration is due: join it
            batch.reports.append(event)
            batch.joined.set()
            await asyncio.shield(batch.done)
            return
        batch = _Batch([event])
        self._waiting[key] = batch
        try:
            if batch.passing() and self._settles_at_once(key):  # wait for the next step
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(batch.joined.wait(), self._linger)
            async with self._writes.hold(key):
                # From here on, reports of `key` wait for the next write.
                del self._waiting[key]
                self.writes += 1
                current = self._cached(key) if self._cached is not None else None
                await mirror_reports(
                    self._kube, key, batch.reports, recorder=self._recorder, current=current
                )
        except BaseException as exc:
            if self._waiting.get(key) is batch:  # stopped before its write began
                del self._waiting[key]
            _fail(batch, exc)
            raise
        batch.done.set_result(None)

    def _settles_at_once(self, key: ObjectKey) -> bool:
        """Whether the cached declaration names no PodBounceDirective (unknown: False)."""
        cached = self._cached(key) if self._cached is not None else None
        if cached is None:
            return False
        spec = cached.get("spec")
        return isinstance(spec, Mapping) and not spec.get("podBounceDirective")


def _fail(batch: _Batch, exc: BaseException) -> None:
    """The batch's other reports fail with the write (transient: they are delivered again)."""
    if isinstance(exc, Exception):
        batch.done.set_exception(exc)
    else:  # cancelled (a stop): the others are not written either
        batch.done.set_exception(TransientError("status write abandoned"))
    batch.done.exception()  # retrieved here: a batch of one has nobody else to see it
