"""An IssuedCertificate's status written, and its transition made known.

`Transitions.write` is the one status write of a reconcile pass: the new status, then the step's
own message (`then`, so that it does not wait behind the bookkeeping), then, when the state,
the issuance or the error changed, a Kubernetes Event (Warning for FAILED or a named warning)
and `status.changed` on the bus, which the issuer mirrors onto the management declaration.
The bookkeeping is done even when `then` failed: the state change stands.

Deliberately not here: deciding the status (policies, the reconciler's methods) and the other
messages (`messages.py` builds them, the reconciler sends them).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from services.agent.messages import Messages
from shared.api.meta import Obj, ObjectKey
from shared.api.v1alpha2 import IssuedCertificateStatus, State
from shared.bus import Bus
from shared.events import DesiredKind, DesiredObject
from shared.k8s import KubeClient
from shared.k8s.events import EventRecorder, transition_message, transition_reason
from shared.k8s.resources import ISSUED_CERTIFICATES
from shared.k8s.status import update_status
from shared.runtime import get_logger

__all__ = ["Transitions"]

log = get_logger(__name__)


class Transitions:
    """Status writes and their Events and `status.changed`, for one cluster's agent."""

    def __init__(
        self, *, kube: KubeClient, bus: Bus, recorder: EventRecorder, messages: Messages
    ) -> None:
        self._kube = kube
        self._bus = bus
        self._recorder = recorder
        self._messages = messages

    async def write(
        self,
        key: ObjectKey,
        raw: Obj,
        old: IssuedCertificateStatus,
        new: IssuedCertificateStatus,
        *,
        reason: str,
        message: str,
        then: Callable[[Obj], Awaitable[None]] | None = None,
        warning: str | None = None,
    ) -> Obj:
        """Write `new` over `raw` (read as `old`); then `then(written)`; then announce it
        (`warning`: the Event is a Warning of that reason). Returns the object written."""
        wire = new.to_wire()
        written = await update_status(
            self._kube,
            ISSUED_CERTIFICATES,
            key.name,
            namespace=key.namespace,
            mutate=lambda _obj: wire,
            current=raw,
        )
        try:
            if then is not None:
                await then(written.object)
        finally:
            await self._announce(key, written.object, old, new, reason, message, warning)
        return written.object

    async def _announce(
        self,
        key: ObjectKey,
        written: Obj,
        old: IssuedCertificateStatus,
        new: IssuedCertificateStatus,
        reason: str,
        message: str,
        warning: str | None,
    ) -> None:
        """The Event and status.changed of a transition (nothing when nothing changed)."""
        if old.state == new.state and old.issuance_id == new.issuance_id and old.error == new.error:
            return
        if warning is not None:
            await self._recorder.record(written, type="Warning", reason=warning, message=message)
        else:
            text = transition_message(new.state, new.error)
            if new.state is not State.FAILED:
                text = f"{text} ({reason}: {message})"
            await self._recorder.record(
                written,
                type="Warning" if new.state is State.FAILED else "Normal",
                reason=transition_reason(new.state),
                message=text,
            )
        log.info(
            "state.changed",
            old=old.state.value,
            new=new.state.value,
            reason=reason,
            error=new.error or None,
        )
        await self._bus.publish(self._messages.status_changed(key, written, new))

    async def report_refused(self, desired: DesiredObject, error: str) -> None:
        """status.changed FAILED for a declaration this cluster refused (desired state hands
        it over): it cannot exist here, so it has no status of its own to write."""
        if desired.kind is DesiredKind.ISSUED_CERTIFICATE:
            await self._bus.publish(self._messages.declaration_refused(desired, error))
