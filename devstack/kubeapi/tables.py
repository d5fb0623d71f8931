"""`meta.k8s.io/v1` Table responses: the columns `kubectl get` prints.

Built-in kinds get the columns kube-apiserver's printers give them (the wide ones at priority
1); custom resources get Name plus the CRD version's `additionalPrinterColumns`, evaluated with
the simple JSONPath subset CRDs allow (`.a.b`, `[n]`, `[*]`, `[?(@.k=="v")]`), or Name + Age
when the CRD declares none.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any

from shared.api.meta import Obj

from . import events, selectors
from .resources import ResourceType

_NAME_DESC = (
    "Name must be unique within a namespace. Is required when creating resources, although some "
    "resources may allow a client to request the generation of an appropriate name "
    "automatically. Name is primarily intended for creation idempotence and configuration "
    "definition. Cannot be updated. More info: "
    "https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names"
)
_AGE_DESC = (
    "CreationTimestamp is a timestamp representing the server time when this object was created. "
    "It is not guaranteed to be set in happens-before order across separate operations. Clients "
    "may not set this value. It is represented in RFC3339 form and is in UTC."
)


def human_duration(seconds: float) -> str:
    """k8s.io/apimachinery/pkg/util/duration.HumanDuration."""
    s = int(seconds)
    if s < -1:
        return "<invalid>"
    if s < 0:
        return "0s"
    if s < 120:
        return f"{s}s"
    minutes = s // 60
    if minutes < 10:
        return _and(minutes, "m", s % 60, "s")
    if minutes < 180:
        return f"{minutes}m"
    hours = s // 3600
    if hours < 8:
        return _and(hours, "h", minutes % 60, "m")
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        return _and(hours // 24, "d", hours % 24, "h")
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    if hours < 24 * 365 * 8:
        return _and(hours // 24 // 365, "y", (hours // 24) % 365, "d")
    return f"{hours // 24 // 365}y"


def _and(major: int, major_unit: str, minor: int, minor_unit: str) -> str:
    """`3m`, or `3m20s` when the minor part is not zero."""
    return f"{major}{major_unit}" if minor == 0 else f"{major}{major_unit}{minor}{minor_unit}"


def age(ts: str | None) -> str:
    if not ts:
        return "<unknown>"
    try:
        t = datetime.strptime(ts, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError:
        return "<unknown>"
    return human_duration((datetime.now(UTC) - t).total_seconds())


# --- JSONPath subset -----------------------------------------------------------------------------

_STEP = re.compile(
    r"\.([^.\[]+)|\[(\d+|\*)\]|\[\?\(@\.([\w.-]+)\s*==\s*(\"[^\"]*\"|'[^']*'|[^)]+)\)\]"
)


def jsonpath(obj: Any, path: str) -> list[Any]:
    path = path.strip()
    if path.startswith("{") and path.endswith("}"):
        path = path[1:-1]
    if path.startswith("$"):
        path = path[1:]
    results = [obj]
    pos = 0
    while pos < len(path):
        m = _STEP.match(path, pos)
        if not m:
            return []
        pos = m.end()
        nxt: list[Any] = []
        for cur in results:
            if m.group(1) is not None:
                if isinstance(cur, dict) and m.group(1) in cur:
                    nxt.append(cur[m.group(1)])
            elif m.group(2) is not None:
                if isinstance(cur, list):
                    if m.group(2) == "*":
                        nxt.extend(cur)
                    elif int(m.group(2)) < len(cur):
                        nxt.append(cur[int(m.group(2))])
                elif isinstance(cur, dict) and m.group(2) == "*":
                    nxt.extend(cur.values())
            else:
                want = m.group(4).strip()
                if want[0] in "\"'":
                    want = want[1:-1]
                if isinstance(cur, list):
                    for item in cur:
                        got = jsonpath(item, "." + m.group(3))
                        if got and _scalar(got[0]) == want:
                            nxt.append(item)
        results = nxt
    return results


def _scalar(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, dict | list):
        return json.dumps(v, separators=(",", ":"))
    return str(v)


# --- columns -------------------------------------------------------------------------------------


def _col(name: str, type_: str = "string", priority: int = 0, fmt: str = "", desc: str = "") -> Obj:
    return {"name": name, "type": type_, "format": fmt, "description": desc, "priority": priority}


def _pod_cells(o: Obj) -> list[Any]:
    spec = o.get("spec") or {}
    status = o.get("status") or {}
    total = len(spec.get("containers") or [])
    cstatuses = status.get("containerStatuses") or []
    ready = sum(1 for c in cstatuses if c.get("ready"))
    restarts = sum(int(c.get("restartCount", 0)) for c in cstatuses)
    reason = status.get("reason") or status.get("phase") or "Pending"
    if o["metadata"].get("deletionTimestamp"):
        reason = "Terminating"
    gates = spec.get("readinessGates") or []
    return [
        o["metadata"]["name"],
        f"{ready}/{total}",
        reason,
        str(restarts),
        age(o["metadata"].get("creationTimestamp")),
        status.get("podIP") or "<none>",
        spec.get("nodeName") or "<none>",
        status.get("nominatedNodeName") or "<none>",
        f"{len(gates)}/{len(gates)}" if gates else "<none>",
    ]


def _containers(o: Obj) -> tuple[str, str]:
    cs = ((o.get("spec") or {}).get("template") or {}).get("spec", {}).get("containers") or []
    return ",".join(c.get("name", "") for c in cs), ",".join(c.get("image", "") for c in cs)


def _deploy_cells(o: Obj) -> list[Any]:
    spec = o.get("spec") or {}
    st = o.get("status") or {}
    names, images = _containers(o)
    return [
        o["metadata"]["name"],
        f"{st.get('readyReplicas', 0)}/{spec.get('replicas', 1)}",
        st.get("updatedReplicas", 0),
        st.get("availableReplicas", 0),
        age(o["metadata"].get("creationTimestamp")),
        names,
        images,
        selectors.format_label_selector(spec.get("selector")),
    ]


def _rs_cells(o: Obj) -> list[Any]:
    spec = o.get("spec") or {}
    st = o.get("status") or {}
    names, images = _containers(o)
    return [
        o["metadata"]["name"],
        spec.get("replicas", 1),
        st.get("replicas", 0),
        st.get("readyReplicas", 0),
        age(o["metadata"].get("creationTimestamp")),
        names,
        images,
        selectors.format_label_selector(spec.get("selector")),
    ]


def _service_cells(o: Obj, age_cell: str) -> list[Any]:
    spec = o.get("spec") or {}
    ports = ",".join(
        f"{p.get('port')}/{p.get('protocol', 'TCP')}"
        if not p.get("nodePort")
        else f"{p.get('port')}:{p['nodePort']}/{p.get('protocol', 'TCP')}"
        for p in spec.get("ports") or []
    )
    selector = ",".join(f"{k}={v}" for k, v in sorted((spec.get("selector") or {}).items()))
    return [
        o["metadata"]["name"],
        spec.get("type", "ClusterIP"),
        spec.get("clusterIP") or "<none>",
        ",".join(spec.get("externalIPs") or []) or "<none>",
        ports or "<none>",
        age_cell,
        selector or "<none>",
    ]


def _event_cells(o: Obj) -> list[Any]:
    o = events.to_core(o)  # an events.k8s.io/v1 Event has the same columns
    inv = o.get("involvedObject") or {}
    last = o.get("lastTimestamp") or o.get("eventTime") or o["metadata"].get("creationTimestamp")
    first = o.get("firstTimestamp") or o.get("eventTime") or o["metadata"].get("creationTimestamp")
    src = (o.get("source") or {}).get("component") or o.get("reportingComponent") or ""
    return [
        age(last),
        o.get("type", ""),
        o.get("reason", ""),
        f"{str(inv.get('kind', '')).lower()}/{inv.get('name', '')}",
        inv.get("fieldPath", ""),
        src,
        o.get("message", ""),
        age(first),
        o.get("count", 1),
        o["metadata"]["name"],
    ]


BUILTIN_COLUMNS: dict[str, list[Obj]] = {
    "Namespace": [
        _col("Name", fmt="name", desc=_NAME_DESC),
        _col("Status", desc="The status of the namespace"),
        _col("Age", desc=_AGE_DESC),
    ],
    "Secret": [
        _col("Name", fmt="name", desc=_NAME_DESC),
        _col("Type", desc="The type of the secret"),
        _col("Data", "integer", desc="The number of entries in the secret"),
        _col("Age", desc=_AGE_DESC),
    ],
    "ConfigMap": [
        _col("Name", fmt="name", desc=_NAME_DESC),
        _col("Data", "integer", desc="The number of entries in the configmap"),
        _col("Age", desc=_AGE_DESC),
    ],
    "Pod": [
        _col("Name", fmt="name", desc=_NAME_DESC),
        _col("Ready", desc="The aggregate readiness state of this pod for accepting traffic."),
        _col("Status", desc="The aggregate status of the containers in this pod."),
        _col(
            "Restarts",
            desc=(
                "The number of times the containers in this pod have been restarted and when the "
                "last container in this pod has restarted."
            ),
        ),
        _col("Age", desc=_AGE_DESC),
        _col(
            "IP",
            priority=1,
            desc=(
                "IP address allocated to the pod. Routable at least within the cluster. Empty if "
                "not yet allocated."
            ),
        ),
        _col(
            "Node",
            priority=1,
            desc=("NodeName is a request to schedule this pod onto a specific node."),
        ),
        _col(
            "Nominated Node",
            priority=1,
            desc=("nominatedNodeName is set only when this pod preempts other pods on the node."),
        ),
        _col(
            "Readiness Gates",
            priority=1,
            desc=("If specified, all readiness gates will be evaluated for pod readiness."),
        ),
    ],
    "Event": [
        _col("Last Seen", desc="The last time this event was observed."),
        _col(
            "Type",
            desc=("Type of this event (Normal, Warning), new types could be added in the future."),
        ),
        _col(
            "Reason",
            desc=(
                "This should be a short, machine understandable string that gives the reason for "
                "the transition into the object's current status."
            ),
        ),
        _col("Object", desc="The object that this event is about."),
        _col("Subobject", priority=1, desc="The field path within the object this event is about."),
        _col("Source", priority=1, desc="The component reporting this event."),
        _col("Message", desc="A human-readable description of the status of this operation."),
        _col("First Seen", priority=1, desc="The time at which the event was first recorded."),
        _col("Count", "integer", priority=1, desc="The number of times this event has occurred."),
        _col("Name", priority=1, fmt="name", desc=_NAME_DESC),
    ],
    "Service": [
        _col("Name", fmt="name", desc=_NAME_DESC),
        _col("Type", desc="The type of the service."),
        _col("Cluster-IP", desc="The IP address of the service."),
        _col("External-IP", desc="The external IP address of the service."),
        _col("Port(s)", desc="The ports of the service."),
        _col("Age", desc=_AGE_DESC),
        _col("Selector", priority=1, desc="Route service traffic to pods with matching labels."),
    ],
    "Lease": [
        _col("Name", fmt="name", desc=_NAME_DESC),
        _col("Holder", desc="The holder of the lease"),
        _col("Age", desc=_AGE_DESC),
    ],
    "Deployment": [
        _col("Name", fmt="name", desc=_NAME_DESC),
        _col("Ready", desc="Number of the pod with ready state"),
        _col(
            "Up-to-date",
            "integer",
            desc=(
                "Total number of non-terminated pods targeted by this deployment that have the "
                "desired template spec."
            ),
        ),
        _col(
            "Available",
            "integer",
            desc=(
                "Total number of available pods (ready for at least minReadySeconds) targeted by "
                "this deployment."
            ),
        ),
        _col("Age", desc=_AGE_DESC),
        _col("Containers", priority=1, desc="Names of each container in the template."),
        _col("Images", priority=1, desc="Images referenced by each container in the template."),
        _col(
            "Selector",
            priority=1,
            desc=(
                "Label selector for pods. Existing ReplicaSets whose pods are selected by this "
                "will be the ones affected by this deployment."
            ),
        ),
    ],
    "ReplicaSet": [
        _col("Name", fmt="name", desc=_NAME_DESC),
        _col("Desired", "integer", desc="Replicas is the number of desired replicas."),
        _col(
            "Current", "integer", desc="Replicas is the most recently observed number of replicas."
        ),
        _col("Ready", "integer", desc="The number of ready replicas for this replica set."),
        _col("Age", desc=_AGE_DESC),
        _col("Containers", priority=1, desc="Names of each container in the template."),
        _col("Images", priority=1, desc="Images referenced by each container in the template."),
        _col(
            "Selector",
            priority=1,
            desc=("Selector is a label query over pods that should match the replica count."),
        ),
    ],
    "CustomResourceDefinition": [
        _col("Name", fmt="name", desc=_NAME_DESC),
        _col("Created At", "date", desc=_AGE_DESC),
    ],
}


def _builtin_cells(kind: str, o: Obj) -> list[Any]:
    md = o["metadata"]
    a = age(md.get("creationTimestamp"))
    if kind == "Namespace":
        return [md["name"], (o.get("status") or {}).get("phase", "Active"), a]
    if kind == "Secret":
        return [md["name"], o.get("type", "Opaque"), len(o.get("data") or {}), a]
    if kind == "ConfigMap":
        return [md["name"], len(o.get("data") or {}) + len(o.get("binaryData") or {}), a]
    if kind == "Pod":
        return _pod_cells(o)
    if kind == "Event":
        return _event_cells(o)
    if kind == "Lease":
        return [md["name"], (o.get("spec") or {}).get("holderIdentity") or "", a]
    if kind == "Service":
        return _service_cells(o, a)
    if kind == "Deployment":
        return _deploy_cells(o)
    if kind == "ReplicaSet":
        return _rs_cells(o)
    if kind == "CustomResourceDefinition":
        return [md["name"], md.get("creationTimestamp")]
    return [md["name"], a]


def _cr_columns(rt: ResourceType, version: str) -> list[Obj]:
    custom = rt.printer_columns.get(version) or []
    cols = [_col("Name", fmt="name", desc=_NAME_DESC)]
    if not custom:
        return [*cols, _col("Age", "date", desc=_AGE_DESC)]
    cols.extend(
        _col(
            c["name"],
            c.get("type", "string"),
            int(c.get("priority", 0)),
            c.get("format", ""),
            c.get("description", ""),
        )
        for c in custom
    )
    return cols


def _cr_cell(type_: str, value: Any) -> Any:
    if type_ == "date":
        return age(value) if isinstance(value, str) else None
    if type_ == "integer":
        return value if isinstance(value, int) and not isinstance(value, bool) else None
    if type_ == "number":
        return value if isinstance(value, int | float) and not isinstance(value, bool) else None
    if type_ == "boolean":
        return value if isinstance(value, bool) else None
    return _scalar(value)


def _cr_cells(rt: ResourceType, version: str, o: Obj) -> list[Any]:
    custom = rt.printer_columns.get(version) or []
    if not custom:
        return [o["metadata"]["name"], age(o["metadata"].get("creationTimestamp"))]
    cells: list[Any] = [o["metadata"]["name"]]
    for c in custom:
        found = jsonpath(o, c["jsonPath"])
        cells.append(_cr_cell(c.get("type", "string"), found[0]) if found else None)
    return cells


def columns(rt: ResourceType, version: str) -> list[Obj]:
    if rt.builtin:
        return BUILTIN_COLUMNS.get(
            rt.kind, [_col("Name", fmt="name", desc=_NAME_DESC), _col("Age", desc=_AGE_DESC)]
        )
    return _cr_columns(rt, version)


def row(rt: ResourceType, version: str, obj: Obj, include_object: str) -> Obj:
    cells = _builtin_cells(rt.kind, obj) if rt.builtin else _cr_cells(rt, version, obj)
    r: Obj = {"cells": cells}
    if include_object == "Object":
        r["object"] = obj
    elif include_object != "None":
        r["object"] = {
            "kind": "PartialObjectMetadata",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": obj.get("metadata", {}),
        }
    return r


def table(
    rt: ResourceType,
    version: str,
    objs: list[Obj],
    *,
    metadata: Obj,
    include_object: str = "Metadata",
    headers: bool = True,
) -> Obj:
    out: Obj = {"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": metadata}
    out["columnDefinitions"] = columns(rt, version) if headers else None
    out["rows"] = [row(rt, version, o, include_object) for o in objs]
    if not headers:
        out.pop("columnDefinitions")
    return out
