"""Write an object's status through `/status`, optimistic-concurrency style.

The write is a PUT of the whole object to the status subresource, carrying the resourceVersion it
was computed from. If someone else wrote in between, the server answers 409 Conflict; we re-read
the object, compute the status again from the fresh copy (the caller's `mutate` is a function of
the object, not a value), and try again: client-go's `retry.RetryOnConflict`. Nothing written by
the other party is lost, and nothing of ours is applied to a state we did not see.

Retries use stamina (`on=Conflict`, capped attempts and total time, jitter); in tests
`stamina.set_testing(True, ...)` removes the waits. Other errors propagate unchanged.

Deliberately not here: deciding what the status should be (the reconciler's policies do that) and
how Events look (`events.py`; `update_model_status` only hands a state change to its recorder).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import stamina
import structlog
from pydantic import ValidationError

from shared.api.meta import Obj
from shared.api.v1alpha2 import (
    IssuedCertificate,
    IssuedCertificateStatus,
    PodBounceDirective,
    PodBounceDirectiveStatus,
    State,
)
from shared.k8s.client import KubeClient
from shared.k8s.errors import Conflict
from shared.k8s.events import EventRecorder, transition_message
from shared.k8s.resources import ISSUED_CERTIFICATES, POD_BOUNCE_DIRECTIVES, Resource

__all__ = ["StatusRetry", "StatusWrite", "copy_json", "update_model_status", "update_status"]

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class StatusRetry:
    """How hard to try when the object keeps changing under us."""

    attempts: int = 8
    """Tries in all, the first included. client-go's DefaultRetry makes 5; 8 leaves room for a
    few controllers writing one object at once without ever looping unboundedly."""

    timeout_seconds: float = 10.0
    """Give up after this long in total, in seconds, whatever the attempt count."""

    wait_initial_seconds: float = 0.01
    """First wait after a conflict, in seconds: client-go's DefaultRetry waits 10 ms."""

    wait_max_seconds: float = 0.5
    """Longest wait between tries, in seconds."""

    wait_jitter_seconds: float = 0.02
    """Random extra wait, in seconds, so racing writers do not retry in lockstep."""


@dataclass(frozen=True, slots=True)
class StatusWrite:
    """What a status update did: the status before, after, and the object as written."""

    before: Obj
    after: Obj
    object: Obj
    attempts: int

    @property
    def changed(self) -> bool:
        """Whether a write happened (False when `mutate` returned the same status)."""
        return self.before != self.after


async def update_status(
    client: KubeClient,
    resource: Resource,
    name: str,
    *,
    namespace: str | None,
    mutate: Callable[[Obj], Mapping[str, Any]],
    current: Mapping[str, Any] | None = None,
    retry: StatusRetry | None = None,
) -> StatusWrite:
    """Set `status = mutate(object)` on the freshest object, retrying on 409 Conflict.

    `mutate` gets a deep copy of the whole object (so it can look at generation and spec) and
    returns the complete new status; it may be called several times. `current`, when given (e.g.
    from an informer cache), saves the first read; it is never changed (nor is any object read
    here: only `mutate`'s copy is its to change). A status equal to the one read is not
    written. Raises Conflict when the attempts or the time run out, NotFound if the object went.
    The StatusWrite's `before` may share parts with `current`: read it, do not change it.
    """
    policy = retry or StatusRetry()
    attempts = 0
    seed = dict(current) if current is not None else None
    async for attempt in stamina.retry_context(
        on=Conflict,
        attempts=policy.attempts,
        timeout=policy.timeout_seconds,
        wait_initial=policy.wait_initial_seconds,
        wait_max=policy.wait_max_seconds,
        wait_jitter=policy.wait_jitter_seconds,
    ):
        with attempt:
            attempts += 1
            from_cache = seed is not None
            if seed is not None:
                obj, seed = seed, None
            else:
                obj = await client.get(resource, name, namespace=namespace)
            before, after = _compute(obj, mutate)
            if after == before and from_cache:
                # "Nothing to write" is only trustworthy against the server's copy: the cached
                # one may be older than a write that changed the status away from ours.
                obj = await client.get(resource, name, namespace=namespace)
                before, after = _compute(obj, mutate)
            if after == before:
                return StatusWrite(before, after, obj, attempts)
            try:
                written = await client.replace_status(resource, {**obj, "status": after})
            except Conflict:
                log.debug("status.conflict_retrying", key=f"{namespace}/{name}", attempt=attempts)
                raise
            return StatusWrite(before, after, written, attempts)
    raise AssertionError("unreachable: stamina either returns through the body or raises")


def _compute(obj: Obj, mutate: Callable[[Obj], Mapping[str, Any]]) -> tuple[Obj, Obj]:
    before = obj.get("status") or {}
    return before, dict(mutate(copy_json(obj)))


def copy_json(value: Any) -> Any:
    """A deep copy of a JSON value (dicts, lists, scalars), as an API object is: what
    `copy.deepcopy` gives for such data, without its memo and dispatch (several times faster)."""
    if isinstance(value, dict):
        return {k: copy_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [copy_json(v) for v in value]
    return value


ModelT = TypeVar("ModelT", IssuedCertificate, PodBounceDirective)

_RESOURCES: Mapping[type[Any], Resource] = {
    IssuedCertificate: ISSUED_CERTIFICATES,
    PodBounceDirective: POD_BOUNCE_DIRECTIVES,
}


async def update_model_status(
    client: KubeClient,
    model: type[ModelT],
    name: str,
    *,
    namespace: str,
    mutate: Callable[[ModelT], IssuedCertificateStatus | PodBounceDirectiveStatus],
    current: ModelT | Mapping[str, Any] | None = None,
    retry: StatusRetry | None = None,
    recorder: EventRecorder | None = None,
) -> tuple[ModelT, StatusWrite]:
    """`update_status` for our custom resources, with models instead of dicts.

    `mutate(obj)` gets the fresh IssuedCertificate / PodBounceDirective and returns its new
    status model. `current` (a model, or the object as an informer caches it) saves the first
    read. Returns the object as written and the StatusWrite. With a `recorder`, a change of an
    IssuedCertificate's `status.state` is also recorded as an Event (best effort).
    """

    def mutate_raw(raw: Obj) -> Mapping[str, Any]:
        status = mutate(model.from_object(raw))
        return status.to_wire()

    write = await update_status(
        client,
        _RESOURCES[model],
        name,
        namespace=namespace,
        mutate=mutate_raw,
        current=current.to_object()
        if isinstance(current, IssuedCertificate | PodBounceDirective)
        else current,
        retry=retry,
    )
    written = model.from_object(write.object)
    if recorder is not None and write.changed and isinstance(written, IssuedCertificate):
        try:
            old_state: State | None = IssuedCertificateStatus.model_validate(write.before).state
        except ValidationError:  # a status we cannot read was replaced: still a transition
            old_state = None
        after = written.status
        await recorder.transition(
            written,
            old=old_state,
            new=after.state,
            message=transition_message(after.state, after.error),
        )
    return written, write
