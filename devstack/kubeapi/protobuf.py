"""Decoding of `application/vnd.kubernetes.protobuf` request bodies, for the kinds kubectl's
imperative generators send that way (`kubectl create namespace|configmap|secret`).

Only decoding, only Namespace, ConfigMap and Secret (field numbers from k8s.io/api
`generated.proto`); anything else is a 415, and responses are always JSON (clients that send
protobuf also accept JSON).  The wire format is the `k8s\\x00` magic followed by a
`runtime.Unknown` envelope whose `raw` field holds the object.
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from typing import Any

from . import errors

MAGIC = b"k8s\x00"
Obj = dict[str, Any]
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
KINDS: dict[tuple[str, str], Schema] = {
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
        elif typ == "int":
            obj[name] = val - (1 << 64) if val >= 1 << 63 else val
        elif typ == "bool":
            obj[name] = bool(val)
        elif typ == "repeated:string":
            obj.setdefault(name, []).append(bytes(val).decode())
        elif isinstance(typ, str) and typ.startswith("map:"):
            entry = _decode(val, {1: ("k", "string"), 2: ("v", typ[4:])})
            value = entry.get("v", b"" if typ == "map:bytes" else "")
            if typ == "map:bytes":
                value = base64.b64encode(value).decode()
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
        "application/json, application/yaml (protobuf only for Namespace, ConfigMap, Secret)",
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
    return {"apiVersion": key[0], "kind": key[1], **obj}
