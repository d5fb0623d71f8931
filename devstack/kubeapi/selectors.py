"""Label selectors and field selectors, parsed from query strings and from LabelSelector objects.

Label selector syntax is k8s.io/apimachinery/pkg/labels: `a=b`, `a==b`, `a!=b`, `a in (x,y)`,
`a notin (x,y)`, `a`, `!a`, joined by commas.  Field selectors support `=`, `==`, `!=` on
`metadata.name`, `metadata.namespace` and the per-kind fields kube-apiserver indexes
(`FIELDS_BY_KIND`); anything else is a 400, as in kube-apiserver.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from shared.api.meta import Obj

from . import errors
from .resources import ResourceType


@dataclass(frozen=True)
class Requirement:
    key: str
    op: str  # =, !=, in, notin, exists, !
    values: tuple[str, ...] = ()

    def matches(self, labels: dict[str, str]) -> bool:
        present = self.key in labels
        if self.op == "exists":
            return present
        if self.op == "!":
            return not present
        if self.op in ("=", "in"):
            return present and labels[self.key] in self.values
        if self.op in ("!=", "notin"):
            return not present or labels[self.key] not in self.values
        raise AssertionError(self.op)


LabelSelector = list[Requirement]

_TOKEN = re.compile(r"\s*(!=|==|=|\(|\)|,|!|[^\s!=(),]+)")


def _tokens(text: str) -> list[str]:
    out: list[str] = []
    pos = 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        m = _TOKEN.match(text, pos)
        if not m:
            raise errors.bad_request(f"unable to parse requirement: {text!r}")
        out.append(m.group(1))
        pos = m.end()
    return out


def parse_label_selector(text: str | None) -> LabelSelector:
    if not text:
        return []
    toks = _tokens(text)
    reqs: list[Requirement] = []
    i = 0

    def fail(why: str) -> errors.ApiError:
        return errors.bad_request(
            f"unable to parse requirement: {why}"
            if why
            else f'couldn\'t parse the selector string "{text}"'
        )

    while i < len(toks):
        tok = toks[i]
        if tok == "!":
            if i + 1 >= len(toks):
                raise fail("missing key after '!'")
            reqs.append(Requirement(toks[i + 1], "!"))
            i += 2
        else:
            key = tok
            if key in ("=", "==", "!=", "(", ")", ","):
                raise fail(f"found '{key}', expected: identifier")
            nxt = toks[i + 1] if i + 1 < len(toks) else ","
            if nxt == ",":
                reqs.append(Requirement(key, "exists"))
                i += 1
            elif nxt in ("=", "==", "!="):
                value = toks[i + 2] if i + 2 < len(toks) else ""
                if value in (",", "(", ")", "=", "==", "!="):
                    value = ""
                    i += 2
                else:
                    i += 3
                reqs.append(Requirement(key, "!=" if nxt == "!=" else "=", (value,)))
            elif nxt in ("in", "notin"):
                if i + 2 >= len(toks) or toks[i + 2] != "(":
                    raise fail(f"found '{toks[i + 2] if i + 2 < len(toks) else ''}', expected: '('")
                j = i + 3
                values: list[str] = []
                while j < len(toks) and toks[j] != ")":
                    if toks[j] != ",":
                        values.append(toks[j])
                    j += 1
                if j >= len(toks):
                    raise fail("found '', expected: ')'")
                reqs.append(Requirement(key, nxt, tuple(values)))
                i = j + 1
            else:
                raise fail(f"found '{nxt}', expected: in, notin, =, ==, !=, gt, lt")
        if i < len(toks):
            if toks[i] != ",":
                raise fail(f"found '{toks[i]}', expected: ','")
            i += 1
    return reqs


def selector_from_label_selector(sel: dict[str, Any] | None) -> LabelSelector:
    """A metav1.LabelSelector (matchLabels + matchExpressions) as requirements."""
    if not sel:
        return []
    reqs = [Requirement(k, "=", (v,)) for k, v in (sel.get("matchLabels") or {}).items()]
    ops = {"In": "in", "NotIn": "notin", "Exists": "exists", "DoesNotExist": "!"}
    reqs.extend(
        Requirement(expr["key"], ops[expr["operator"]], tuple(expr.get("values") or ()))
        for expr in sel.get("matchExpressions") or []
    )
    return reqs


def labels_match(selector: LabelSelector, obj: Obj) -> bool:
    labels = obj.get("metadata", {}).get("labels") or {}
    return all(r.matches(labels) for r in selector)


def format_label_selector(sel: dict[str, Any] | None) -> str:
    """metav1.FormatLabelSelector, as kubectl prints SELECTOR columns."""
    if not sel:
        return "<none>"
    parts = [f"{k}={v}" for k, v in sorted((sel.get("matchLabels") or {}).items())]
    for expr in sel.get("matchExpressions") or []:
        op = expr["operator"]
        if op in ("In", "NotIn"):
            parts.append(f"{expr['key']} {op.lower()} ({','.join(expr.get('values') or [])})")
        elif op == "Exists":
            parts.append(expr["key"])
        else:
            parts.append(f"!{expr['key']}")
    return ",".join(parts) or "<none>"


# --- field selectors ------------------------------------------------------------------------


def _path(*parts: str) -> Callable[[Obj], str]:
    def get(obj: Obj) -> str:
        cur: Any = obj
        for p in parts:
            cur = cur.get(p) if isinstance(cur, dict) else None
        if cur is None:
            return ""
        if isinstance(cur, bool):
            return "true" if cur else "false"
        return str(cur)

    return get


_COMMON = {
    "metadata.name": _path("metadata", "name"),
    "metadata.namespace": _path("metadata", "namespace"),
}

FIELDS_BY_KIND: dict[str, dict[str, Callable[[Obj], str]]] = {
    "Pod": {
        "spec.nodeName": _path("spec", "nodeName"),
        "spec.restartPolicy": _path("spec", "restartPolicy"),
        "spec.schedulerName": _path("spec", "schedulerName"),
        "spec.serviceAccountName": _path("spec", "serviceAccountName"),
        "spec.hostNetwork": _path("spec", "hostNetwork"),
        "status.phase": _path("status", "phase"),
        "status.podIP": _path("status", "podIP"),
        "status.nominatedNodeName": _path("status", "nominatedNodeName"),
    },
    "Secret": {"type": _path("type")},
    "Namespace": {"status.phase": _path("status", "phase")},
    "Event": {
        "involvedObject.kind": _path("involvedObject", "kind"),
        "involvedObject.namespace": _path("involvedObject", "namespace"),
        "involvedObject.name": _path("involvedObject", "name"),
        "involvedObject.uid": _path("involvedObject", "uid"),
        "involvedObject.apiVersion": _path("involvedObject", "apiVersion"),
        "involvedObject.resourceVersion": _path("involvedObject", "resourceVersion"),
        "involvedObject.fieldPath": _path("involvedObject", "fieldPath"),
        "reason": _path("reason"),
        "reportingComponent": _path("reportingComponent"),
        "source": _path("source", "component"),
        "type": _path("type"),
    },
    "ReplicaSet": {"status.replicas": _path("status", "replicas")},
}
# events.k8s.io/v1's field labels, on the stored (core) Events they are views of
EVENTS_V1_FIELDS: dict[str, Callable[[Obj], str]] = {
    **{
        f"regarding.{f}": _path("involvedObject", f)
        for f in ("kind", "namespace", "name", "uid", "apiVersion", "resourceVersion", "fieldPath")
    },
    "reason": _path("reason"),
    "reportingController": _path("reportingComponent"),
    "type": _path("type"),
}


@dataclass(frozen=True)
class FieldRequirement:
    field: str
    negate: bool
    value: str
    get: Callable[[Obj], str]

    def matches(self, obj: Obj) -> bool:
        return (self.get(obj) == self.value) != self.negate


def parse_field_selector(
    text: str | None, rt: ResourceType, version: str
) -> list[FieldRequirement]:
    """Field requirements; the fields a kind supports are kube's indexed fields for built-in
    kinds and `metadata.*` plus the CRD version's `selectableFields` for custom resources."""
    if not text:
        return []
    allowed = dict(_COMMON)
    if rt.builtin and rt.group == "events.k8s.io":
        allowed.update(EVENTS_V1_FIELDS)
    elif rt.builtin:
        allowed.update(FIELDS_BY_KIND.get(rt.kind, {}))
    else:
        for path in rt.selectable_fields.get(version, []):
            allowed[path.lstrip(".")] = _path(*path.lstrip(".").split("."))
    if not rt.namespaced:
        allowed.pop("metadata.namespace")
    reqs: list[FieldRequirement] = []
    for part in _split_unescaped(text):
        m = re.fullmatch(r"\s*([^=!\s]+)\s*(==|=|!=)\s*(.*?)\s*", part)
        if not m:
            raise errors.bad_request(f"invalid selector: '{text}'; can't understand '{part}'")
        name, op, value = m.groups()
        if name not in allowed:
            raise errors.bad_request(f"field label not supported: {name}")
        reqs.append(FieldRequirement(name, op == "!=", value.replace("\\,", ","), allowed[name]))
    return reqs


def _split_unescaped(text: str) -> list[str]:
    parts: list[str] = []
    cur = ""
    i = 0
    while i < len(text):
        if text[i] == "\\" and i + 1 < len(text):
            cur += text[i : i + 2]
            i += 2
            continue
        if text[i] == ",":
            parts.append(cur)
            cur = ""
        else:
            cur += text[i]
        i += 1
    if cur:
        parts.append(cur)
    return [p for p in parts if p.strip()]


def fields_match(reqs: list[FieldRequirement], obj: Obj) -> bool:
    return all(r.matches(obj) for r in reqs)
