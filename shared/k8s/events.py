"""Kubernetes Events (`core/v1`), so `kubectl describe` and `kubectl get events` tell the story.

`EventRecorder.record(obj, type=..., reason=..., message=...)` writes one Event about `obj`, named
as client-go names them (`<object name>.<unix nanoseconds in hex>`). A repeat of the same
(object, type, reason, message) within the aggregation window bumps `count` and `lastTimestamp` of
the existing Event instead of creating another, as client-go's EventCorrelator does; that is what
keeps a crash-looping reconcile from flooding etcd.

Recording is best effort, exactly as in client-go: an Event that cannot be written is logged and
dropped, never raised into the reconcile that asked for it (losing an Event must not fail an
issuance). Cancellation still propagates.

Not here: the newer `events.k8s.io/v1` API (kubectl describe reads both; core/v1 is what every
cluster serves), rate limiting beyond aggregation, and Events about objects of other clusters.

`transition(obj, old, new, message)` is the one convention for IssuedCertificate state changes:
reason = the new state in CamelCase (`Requested`, `Issued`, `Finished`, `Failed`, `Pending`),
type Warning for FAILED and Normal otherwise.
"""

from __future__ import annotations

import socket
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import structlog
from pydantic import BaseModel

from shared.api.meta import metadata
from shared.api.v1alpha2 import State
from shared.k8s.client import KubeClient
from shared.k8s.errors import KubeError, NotFound
from shared.k8s.resources import EVENTS
from shared.runtime.clock import Clock, utcnow

__all__ = [
    "EventRecorder",
    "EventSettings",
    "EventType",
    "event_name",
    "transition_message",
    "transition_reason",
]

log = structlog.get_logger(__name__)

EventType = Literal["Normal", "Warning"]


@dataclass(frozen=True, slots=True)
class EventSettings:
    """Aggregation of repeated Events."""

    aggregate_window_seconds: float = 600.0
    """A repeat within this many seconds updates the existing Event (count + 1) instead of
    creating a new one. Ten minutes, client-go's EventCorrelator window."""

    max_remembered: int = 4096
    """How many distinct recent Events we remember for aggregation (least recently used are
    forgotten first). client-go's LRU holds 4096 as well."""


def event_name(object_name: str, when: datetime) -> str:
    """client-go's naming: `<name>.<unix time in nanoseconds, lower-case hex>`."""
    nanos = int(when.timestamp()) * 1_000_000_000 + when.microsecond * 1000
    return f"{object_name}.{nanos:x}"


def transition_reason(state: State) -> str:
    """The Event reason for entering `state`: `ISSUED` -> `Issued`."""
    return state.value.capitalize()


_TRANSITION_MESSAGES: dict[State, str] = {
    State.PENDING: "Waiting for the agent to pick up the certificate request.",
    State.REQUESTED: "Private key generated in this cluster; certificate signing request sent.",
    State.ISSUED: "Certificate issued by the central CA.",
    State.FINISHED: "Certificate secret written; issuance complete.",
    State.FAILED: "Issuance failed.",
}


def transition_message(state: State, error: str = "") -> str:
    """The Event message for entering `state`: the status error for FAILED, else a fixed text."""
    if state is State.FAILED and error:
        return error
    return _TRANSITION_MESSAGES[state]


def _rfc3339(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(slots=True)
class _Seen:
    name: str
    namespace: str
    count: int
    first: str
    last_monotonic: float


class EventRecorder:
    """Writes Events for one component (`reportingComponent`), e.g. `meshtrust-agent`."""

    def __init__(
        self,
        client: KubeClient,
        *,
        component: str,
        instance: str | None = None,
        settings: EventSettings | None = None,
        now: Clock = utcnow,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self._component = component
        self._instance = instance or socket.gethostname()
        self._settings = settings or EventSettings()
        self._now = now
        self._monotonic = monotonic
        self._seen: OrderedDict[tuple[str, ...], _Seen] = OrderedDict()

    async def record(
        self,
        obj: Mapping[str, Any] | BaseModel,
        *,
        type: EventType,  # shadows the builtin on purpose: the Event field is called `type`
        reason: str,
        message: str,
    ) -> None:
        """Record one Event about `obj` (a raw object or one of our models). Never raises
        KubeError: failures are logged."""
        raw: Mapping[str, Any] = (
            obj.model_dump(mode="json", by_alias=True) if isinstance(obj, BaseModel) else obj
        )
        meta = metadata(raw)
        name = meta.name
        namespace = meta.namespace or "default"
        involved = {
            "apiVersion": raw.get("apiVersion"),
            "kind": raw.get("kind"),
            "name": name,
            "namespace": meta.get("namespace"),
            "uid": meta.get("uid"),
            "resourceVersion": meta.get("resourceVersion"),
        }
        involved = {k: v for k, v in involved.items() if v}
        message = message[:1024]  # kube-apiserver rejects messages over 1 KiB in events.k8s.io
        aggregate_key = (namespace, name, str(meta.get("uid") or ""), type, reason, message)
        log_ = log.bind(key=f"{namespace}/{name}", reason=reason, event_type=type)
        now = self._now()
        try:
            if await self._bump(aggregate_key, now):
                return
            event = {
                "apiVersion": "v1",
                "kind": "Event",
                "metadata": {"name": event_name(name, now), "namespace": namespace},
                "involvedObject": involved,
                "type": type,
                "reason": reason,
                "message": message,
                "source": {"component": self._component, "host": self._instance},
                "reportingComponent": self._component,
                "reportingInstance": self._instance,
                "firstTimestamp": _rfc3339(now),
                "lastTimestamp": _rfc3339(now),
                "count": 1,
            }
            created = await self._client.create(EVENTS, event)
            self._remember(
                aggregate_key,
                _Seen(
                    name=metadata(created).name or event_name(name, now),
                    namespace=namespace,
                    count=1,
                    first=_rfc3339(now),
                    last_monotonic=self._monotonic(),
                ),
            )
        except KubeError as exc:
            log_.warning("event.not_recorded", error=repr(exc))

    async def _bump(self, aggregate_key: tuple[str, ...], now: datetime) -> bool:
        """Update the remembered Event for a repeat; False if there is none (create one)."""
        seen = self._seen.get(aggregate_key)
        if seen is None:
            return False
        if self._monotonic() - seen.last_monotonic > self._settings.aggregate_window_seconds:
            del self._seen[aggregate_key]
            return False
        try:
            await self._client.patch_merge(
                EVENTS,
                seen.name,
                {"count": seen.count + 1, "lastTimestamp": _rfc3339(now)},
                namespace=seen.namespace,
            )
        except NotFound:
            del self._seen[aggregate_key]
            return False
        seen.count += 1
        seen.last_monotonic = self._monotonic()
        self._seen.move_to_end(aggregate_key)
        return True

    def _remember(self, aggregate_key: tuple[str, ...], seen: _Seen) -> None:
        self._seen[aggregate_key] = seen
        while len(self._seen) > self._settings.max_remembered:
            self._seen.popitem(last=False)

    async def transition(
        self,
        obj: Mapping[str, Any] | BaseModel,
        *,
        old: State | None,
        new: State,
        message: str,
    ) -> None:
        """Record an IssuedCertificate state change (nothing if the state did not change)."""
        if old == new:
            return
        await self.record(
            obj,
            type="Warning" if new is State.FAILED else "Normal",
            reason=transition_reason(new),
            message=message,
        )
