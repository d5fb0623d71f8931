"""Events: `events.k8s.io/v1` as a second view of the core `v1` Events, and the Events the
emulated controllers record.

kube-apiserver stores one kind of Event and serves it in both groups, converting on the way in
and out (k8s.io/kubernetes/pkg/apis/events/v1 conversion): `regarding` is `involvedObject`,
`note` is `message`, `reportingController` is `reportingComponent`, and the old core fields
are `deprecatedSource`, `deprecatedFirstTimestamp`, `deprecatedLastTimestamp`,
`deprecatedCount`. Here too: objects are stored once, in the core shape (`to_core`), and
rendered for `events.k8s.io` (`from_core`). `record` writes an Event as client-go's
EventRecorder does for kube-controller-manager (no aggregation of repeats into `count`).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from shared.api.meta import Obj

if TYPE_CHECKING:
    from .operations import Context, Operations
    from .resources import ResourceType


GROUP = "events.k8s.io"
# events.k8s.io/v1 field -> core/v1 field
RENAMED = {
    "regarding": "involvedObject",
    "note": "message",
    "reportingController": "reportingComponent",
    "deprecatedSource": "source",
    "deprecatedFirstTimestamp": "firstTimestamp",
    "deprecatedLastTimestamp": "lastTimestamp",
    "deprecatedCount": "count",
}
TO_VIEW = {core: view for view, core in RENAMED.items()}


def to_core(obj: Obj) -> Obj:
    """An events.k8s.io/v1 Event as stored (a new top-level dict; parts are shared)."""
    return {RENAMED.get(k, k): v for k, v in obj.items()}


def from_core(obj: Obj) -> Obj:
    """A stored Event as events.k8s.io/v1 serves it (a new top-level dict; parts are shared)."""
    return {TO_VIEW.get(k, k): v for k, v in obj.items()}


def reference(rt: ResourceType, obj: Obj) -> Obj:
    """The ObjectReference an Event is about (what ref.GetReference makes of `obj`)."""
    md = obj["metadata"]
    ref = {
        "kind": rt.kind,
        "namespace": md.get("namespace", ""),
        "name": md["name"],
        "uid": md["uid"],
        "apiVersion": rt.api_version(rt.storage_version),
        "resourceVersion": md.get("resourceVersion", ""),
    }
    return {k: v for k, v in ref.items() if v}


def event(
    *, about: Obj, reason: str, message: str, component: str, now: str, kind: str = "Normal"
) -> Obj:
    """The core/v1 Event client-go's recorder makes: named `<object>.<unix nanos in hex>`."""
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {
            "name": f"{about['name']}.{time.time_ns():x}",
            "namespace": about.get("namespace") or "default",
        },
        "involvedObject": about,
        "reason": reason,
        "message": message,
        "source": {"component": component},
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
        "type": kind,
        "eventTime": None,
        "reportingComponent": component,
        "reportingInstance": "",
    }


def record(ops: Operations, ctx: Context, body: Obj) -> None:
    """Create `body` (from `event`) as a core/v1 Event."""
    rt = ops.registry.by_key("/events")
    assert rt is not None
    ops.create(rt, "v1", body["metadata"]["namespace"], body, ctx)
