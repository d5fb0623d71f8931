"""Decoding of `application/vnd.kubernetes.protobuf` request bodies, for the kinds kubectl's
imperative generators send that way (`kubectl create namespace|configmap|secret|deployment`,
`kubectl create token`, `kubectl auth can-i`, `kubectl auth whoami`).

Only decoding, only Namespace, ConfigMap, Secret and the Deployment fields `kubectl create
deployment` and common manifests set (field numbers from k8s.io/api
`generated.proto`); anything else is a 415, and responses are always JSON (clients that send
protobuf also accept JSON).  The wire format is the `k8s\\x00` magic followed by a
`runtime.Unknown` envelope whose `raw` field holds the object.
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from typing import Any

from shared.api.meta import Obj

from . import errors

MAGIC = b"k8s\x00"
Schema = dict[int, tuple[str, Any]]  # field number -> (name, type)

TIME: Schema = {1: ("seconds", "int"), 2: ("nanos", "int")}
OWNER_REF: Schema = {
    1: ("kind", "string"),
    3: ("name", "string"),
    4: ("uid", "string"),
    5: ("apiVersion", "string"),
    6: ("controller", "bool"),
    7: ("blockOwnerDeletion", "bool"),
}
OBJECT_META: Schema = {
    1: ("name", "string"),
    2: ("generateName", "string"),
    3: ("namespace", "string"),
    5: ("uid", "string"),
    6: ("resourceVersion", "string"),
    7: ("generation", "int"),
    10: ("deletionGracePeriodSeconds", "int"),
    11: ("labels", "map:string"),
    12: ("annotations", "map:string"),
    13: ("ownerReferences", ("repeated", OWNER_REF)),
    14: ("finalizers", "repeated:string"),
}
LABEL_SELECTOR: Schema = {
    1: ("matchLabels", "map:string"),
    2: (
        "matchExpressions",
        (
            "repeated",
            {1: ("key", "string"), 2: ("operator", "string"), 3: ("values", "repeated:string")},
        ),
    ),
}
INT_OR_STRING: Schema = {1: ("type", "int"), 2: ("intVal", "int"), 3: ("strVal", "string")}
CONTAINER: Schema = {
    1: ("name", "string"),
    2: ("image", "string"),
    3: ("command", "repeated:string"),
    4: ("args", "repeated:string"),
    5: ("workingDir", "string"),
    6: (
        "ports",
        (
            "repeated",
            {
                1: ("name", "string"),
                2: ("hostPort", "int"),
                3: ("containerPort", "int"),
                4: ("protocol", "string"),
                5: ("hostIP", "string"),
            },
        ),
    ),
    7: ("env", ("repeated", {1: ("name", "string"), 2: ("value", "string")})),
    8: ("resources", {1: ("limits", "map:quantity"), 2: ("requests", "map:quantity")}),
    13: ("terminationMessagePath", "string"),
    14: ("imagePullPolicy", "string"),
    20: ("terminationMessagePolicy", "string"),
}
POD_SPEC: Schema = {
    2: ("containers", ("repeated", CONTAINER)),
    3: ("restartPolicy", "string"),
    4: ("terminationGracePeriodSeconds", "int?"),
    6: ("dnsPolicy", "string"),
    7: ("nodeSelector", "map:string"),
    8: ("serviceAccountName", "string"),
    19: ("schedulerName", "string"),
    20: ("initContainers", ("repeated", CONTAINER)),
}
# What `kubectl create deployment NAME --image=... [--replicas=N] [--port=P]` sends.
DEPLOYMENT_SPEC: Schema = {
    1: ("replicas", "int?"),
    2: ("selector", LABEL_SELECTOR),
    3: ("template", {1: ("metadata", OBJECT_META), 2: ("spec", POD_SPEC)}),
    4: (
        "strategy",
        {
            1: ("type", "string"),
            2: (
                "rollingUpdate",
                {1: ("maxUnavailable", INT_OR_STRING), 2: ("maxSurge", INT_OR_STRING)},
            ),
        },
    ),
    5: ("minReadySeconds", "int"),
    6: ("revisionHistoryLimit", "int?"),
    7: ("paused", "bool"),
    9: ("progressDeadlineSeconds", "int?"),
}
KINDS: dict[tuple[str, str], Schema] = {
    ("apps/v1", "Deployment"): {1: ("metadata", OBJECT_META), 2: ("spec", DEPLOYMENT_SPEC)},
    ("v1", "Namespace"): {
        1: ("metadata", OBJECT_META),
        2: ("spec", {1: ("finalizers", "repeated:string")}),
        3: ("status", {1: ("phase", "string")}),
    },
    ("v1", "ConfigMap"): {
        1: ("metadata", OBJECT_META),
        2: ("data", "map:string"),
        3: ("binaryData", "map:bytes"),
        4: ("immutable", "bool"),
    },
    ("v1", "Secret"): {
        1: ("metadata", OBJECT_META),
        2: ("data", "map:bytes"),
        3: ("type", "string"),
        4: ("stringData", "map:string"),
        5: ("immutable", "bool"),
    },
}
RESOURCE_ATTRIBUTES: Schema = {
    1: ("namespace", "string"),
    2: ("verb", "string"),
    3: ("group", "string"),
    4: ("version", "string"),
    5: ("resource", "string"),
    6: ("subresource", "string"),
    7: ("name", "string"),
}
# What `kubectl auth can-i` and `kubectl create token` send (k8s.io/api authorization/v1,
# authentication/v1).
KINDS[("authorization.k8s.io/v1", "SelfSubjectAccessReview")] = {
    1: ("metadata", OBJECT_META),
    2: (
        "spec",
        {
            1: ("resourceAttributes", RESOURCE_ATTRIBUTES),
            2: ("nonResourceAttributes", {1: ("path", "string"), 2: ("verb", "string")}),
        },
    ),
}
KINDS[("authorization.k8s.io/v1", "SelfSubjectRulesReview")] = {
    1: ("metadata", OBJECT_META),
    2: ("spec", {1: ("namespace", "string")}),
}
KINDS[("authentication.k8s.io/v1", "SelfSubjectReview")] = {1: ("metadata", OBJECT_META)}
KINDS[("authentication.k8s.io/v1", "TokenRequest")] = {
    1: ("metadata", OBJECT_META),
    2: (
        "spec",
        {
            1: ("audiences", "repeated:string"),
            3: (
                "boundObjectRef",
                {
                    1: ("kind", "string"),
                    2: ("apiVersion", "string"),
                    3: ("name", "string"),
                    4: ("uid", "string"),
                },
            ),
            4: ("expirationSeconds", "int?"),
        },
    ),
}
UNKNOWN: Schema = {
    1: ("typeMeta", {1: ("apiVersion", "string"), 2: ("kind", "string")}),
    2: ("raw", "bytes"),
}


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise ValueError("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7


def _fields(buf: bytes) -> list[tuple[int, int, Any]]:
    out: list[tuple[int, int, Any]] = []
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        num, wire = key >> 3, key & 7
        val: Any
        if wire == 0:
            val, pos = _varint(buf, pos)
        elif wire == 2:
            n, pos = _varint(buf, pos)
            val = buf[pos : pos + n]
            pos += n
        elif wire == 1:
            val, pos = buf[pos : pos + 8], pos + 8
        elif wire == 5:
            val, pos = buf[pos : pos + 4], pos + 4
        else:
            raise ValueError(f"unsupported wire type {wire}")
        out.append((num, wire, val))
    return out


def _decode(buf: bytes, schema: Schema) -> Obj:
    obj: Obj = {}
    for num, _wire, val in _fields(buf):
        if num not in schema:
            continue  # fields we do not model (managedFields, selfLink, ...) are dropped
        name, typ = schema[num]
        if typ in ("string", "int", "bool") and not val:
            continue  # Go's JSON omits empty scalars (omitempty); protobuf writes them
        if typ == "string":
            obj[name] = bytes(val).decode()
        elif typ == "bytes":
            obj[name] = bytes(val)
        elif typ in ("int", "int?"):  # int?: a pointer in Go, so a 0 sent is kept
            obj[name] = val - (1 << 64) if val >= 1 << 63 else val
        elif typ == "bool":
            obj[name] = bool(val)
        elif typ == "repeated:string":
            obj.setdefault(name, []).append(bytes(val).decode())
        elif isinstance(typ, str) and typ.startswith("map:"):
            value_type = {"map:quantity": {1: ("string", "string")}}.get(typ, typ[4:])
            entry = _decode(val, {1: ("k", "string"), 2: ("v", value_type)})
            value = entry.get("v", b"" if typ == "map:bytes" else "")
            if typ == "map:bytes":
                value = base64.b64encode(value).decode()
            elif typ == "map:quantity":
                value = value.get("string", "0") if isinstance(value, dict) else "0"
            obj.setdefault(name, {})[entry.get("k", "")] = value
        elif isinstance(typ, tuple):
            obj.setdefault(name, []).append(_decode(val, typ[1]))
        elif isinstance(typ, dict):
            obj[name] = _decode(val, typ)
    return obj


def _time(t: Obj) -> str:
    return datetime.fromtimestamp(int(t.get("seconds", 0)), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def decode(body: bytes) -> Obj:
    """The JSON form of a protobuf-encoded object, or a 415 for what we cannot decode."""
    unsupported = errors.ApiError(
        415,
        "UnsupportedMediaType",
        "the body of the request was in an unknown format - accepted media types include: "
        "application/json, application/yaml (protobuf only for Namespace, ConfigMap, Secret, "
        "Deployment, and the access reviews and TokenRequest)",
    )
    if not body.startswith(MAGIC):
        raise unsupported
    try:
        envelope = _decode(body[len(MAGIC) :], UNKNOWN)
        tm = envelope.get("typeMeta") or {}
        key = (tm.get("apiVersion", ""), tm.get("kind", ""))
        if key not in KINDS:
            raise unsupported
        obj = _decode(envelope.get("raw", b""), KINDS[key])
    except (ValueError, UnicodeDecodeError) as exc:
        raise errors.bad_request(f"failed to decode protobuf body: {exc}") from exc
    md = obj.setdefault("metadata", {})
    for ts in ("creationTimestamp", "deletionTimestamp"):
        if isinstance(md.get(ts), dict):
            md[ts] = _time(md[ts])
    _int_or_string(obj)
    return {"apiVersion": key[0], "kind": key[1], **obj}


def _int_or_string(node: Any) -> None:
    """intstr.IntOrString messages (type 0: intVal, 1: strVal) as JSON writes them."""
    if isinstance(node, list):
        for item in node:
            _int_or_string(item)
    elif isinstance(node, dict):
        for k, v in node.items():
            if isinstance(v, dict) and set(v) <= {"type", "intVal", "strVal"} and v:
                node[k] = v.get("strVal", "") if v.get("type") == 1 else v.get("intVal", 0)
            else:
                _int_or_string(v)
