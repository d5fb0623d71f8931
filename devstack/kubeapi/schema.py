"""Structural schemas of CRDs: pruning, defaulting and validation of custom resources.

Validation uses `jsonschema` (draft 4, whose boolean exclusiveMinimum/Maximum is what OpenAPI
v3.0 means) on a translation of the CRD schema (`nullable`, `x-kubernetes-int-or-string`), and
renders each failure as kube-apiserver's field error: `spec.replicas: Invalid value: "x":
spec.replicas in body must be of type integer: "string"` with reason and field path.

Not implemented (documented in docs/kubeapi.md): CEL `x-kubernetes-validations`,
`x-kubernetes-list-type` uniqueness, `format` checks, ratcheting below the top level (see
`validate`).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jsonschema

from .errors import Cause

Schema = dict[str, Any]


def prune_and_default(value: Any, schema: Schema | None, path: str = "") -> tuple[Any, list[str]]:
    """Drop fields the schema does not declare, fill defaults; return (value, pruned paths)."""
    pruned: list[str] = []
    if schema is None:
        return value, pruned
    out = _walk(value, schema, path, pruned, root=True)
    return out, pruned


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _walk(value: Any, schema: Schema, path: str, pruned: list[str], root: bool = False) -> Any:
    if isinstance(value, dict):
        props: dict[str, Schema] = schema.get("properties") or {}
        addl = schema.get("additionalProperties")
        preserve = bool(schema.get("x-kubernetes-preserve-unknown-fields"))
        embedded = bool(schema.get("x-kubernetes-embedded-resource"))
        out: dict[str, Any] = {}
        for k, v in value.items():
            if root and k in ("apiVersion", "kind", "metadata"):
                out[k] = v
                continue
            if embedded and k in ("apiVersion", "kind", "metadata"):
                out[k] = v
                continue
            if k in props:
                out[k] = _walk(v, props[k], _join(path, k), pruned)
            elif isinstance(addl, dict):
                out[k] = _walk(v, addl, _join(path, k), pruned)
            elif addl is True or preserve:
                out[k] = v
            else:
                pruned.append(_join(path, k))
        for k, sub in props.items():
            if k not in out and "default" in sub and not (root and k == "metadata"):
                out[k] = _walk(copy.deepcopy(sub["default"]), sub, _join(path, k), [])
        return out
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [_walk(v, schema["items"], f"{path}[{i}]", pruned) for i, v in enumerate(value)]
    return value


def to_json_schema(schema: Schema) -> Schema:
    """Translate an OpenAPI v3.0 structural schema into draft-4 JSON Schema."""
    out: Schema = {}
    for k, v in schema.items():
        if k == "properties":
            out[k] = {name: to_json_schema(s) for name, s in v.items()}
        elif k in ("items", "additionalProperties") and isinstance(v, dict):
            out[k] = to_json_schema(v)
        elif k in ("allOf", "anyOf", "oneOf"):
            out[k] = [to_json_schema(s) for s in v]
        elif k == "not":
            out[k] = to_json_schema(v)
        elif k in (
            "type",
            "enum",
            "required",
            "minimum",
            "maximum",
            "exclusiveMinimum",
            "exclusiveMaximum",
            "minLength",
            "maxLength",
            "pattern",
            "minItems",
            "maxItems",
            "uniqueItems",
            "multipleOf",
            "minProperties",
            "maxProperties",
        ):
            out[k] = v
    if schema.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out.setdefault("anyOf", [{"type": "integer"}, {"type": "string"}])
    if schema.get("nullable"):
        if "type" in out:
            out["type"] = [out["type"], "null"]
        if "enum" in out:
            out["enum"] = [*out["enum"], None]
    return out


def _render(value: Any) -> str:
    if isinstance(value, dict):
        return '"object"'
    if isinstance(value, list):
        return '"array"'
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    return json.dumps(value)


def _type_name(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return "null"


def _field_path(parts: list[Any]) -> str:
    out = ""
    for p in parts:
        if isinstance(p, int):
            out += f"[{p}]"
        else:
            out = _join(out, str(p))
    return out


@dataclass(frozen=True, slots=True)
class _Validators:
    whole: jsonschema.Draft4Validator
    """The object without its metadata."""
    top: jsonschema.Draft4Validator
    """The top level only (its keywords; each declared field's value left unchecked)."""
    fields: dict[str, jsonschema.Draft4Validator]
    """Each declared top-level field's value (`spec`, `status`, ...)."""


_VALIDATORS: dict[int, tuple[Schema, _Validators]] = {}
"""Per CRD version schema (by identity; the schema is kept alive with its entry)."""


def _validators(schema: Schema) -> _Validators:
    cached = _VALIDATORS.get(id(schema))
    if cached is not None and cached[0] is schema:
        return cached[1]
    js = to_json_schema(schema)
    js.get("properties", {}).pop("metadata", None)
    props: dict[str, Any] = js.get("properties") or {}
    validators = _Validators(
        whole=jsonschema.Draft4Validator(js),
        top=jsonschema.Draft4Validator({**js, "properties": {k: {} for k in props}}),
        fields={k: jsonschema.Draft4Validator(sub) for k, sub in props.items()},
    )
    if len(_VALIDATORS) > 256:  # CRDs re-registered many times: start afresh
        _VALIDATORS.clear()
    _VALIDATORS[id(schema)] = (schema, validators)
    return validators


def validate(
    value: dict[str, Any], schema: Schema, old: dict[str, Any] | None = None
) -> list[Cause]:
    """Validate a custom resource (without its metadata) against a CRD version schema.

    On an update (`old`, the stored object), a top-level field equal to the old one (`spec` on a
    status write, `status` on a spec write) is not validated again: kube-apiserver's validation
    ratcheting (on by default since 1.30, GA in 1.33) ignores errors in unchanged fields, so
    checking them could only report what would be ignored. Ratcheting here stops at the top
    level: a changed `spec` is validated whole, which may report an unchanged invalid field
    inside it that kube-apiserver would let through.
    """
    body = {k: v for k, v in value.items() if k != "metadata"}
    validators = _validators(schema)
    errors: list[jsonschema.ValidationError] = []
    if old is None:
        errors.extend(validators.whole.iter_errors(body))
    else:
        errors.extend(validators.top.iter_errors(body))
        for key, field in body.items():
            validator = validators.fields.get(key)
            if validator is None or (key in old and (old[key] is field or old[key] == field)):
                continue
            for err in validator.iter_errors(field):
                err.path.appendleft(key)
                errors.append(err)
    causes: list[Cause] = []
    for err in sorted(errors, key=lambda e: list(map(str, e.absolute_path))):
        causes.extend(_cause(err))
    return causes


def _cause(err: jsonschema.ValidationError) -> list[Cause]:
    """The causes kube-apiserver's OpenAPI validation reports for a failed keyword."""
    path = _field_path(list(err.absolute_path))
    inst: Any = err.instance
    arg: Any = err.validator_value
    if err.validator == "required":
        missing = [r for r in arg if isinstance(inst, dict) and r not in inst]
        return [Cause("FieldValueRequired", "Required value", _join(path, r)) for r in missing]
    message = _MESSAGES.get(str(err.validator))
    if message is None:
        return [Cause("FieldValueInvalid", f"Invalid value: {_render(inst)}: {err.message}", path)]
    node: dict[str, Any] = err.schema if isinstance(err.schema, dict) else {}
    reason, text = message(inst, arg, node, path)
    return [Cause(reason, text, path)]


_Message = Callable[[Any, Any, dict[str, Any], str], tuple[str, str]]
"""(instance, the keyword's value, the schema node, field path) -> (reason, message)."""


def _type(inst: Any, arg: Any, node: dict[str, Any], path: str) -> tuple[str, str]:
    want = arg if isinstance(arg, str) else "/".join(a for a in arg if a != "null")
    return (
        "FieldValueTypeInvalid",
        f"Invalid value: {_render(inst)}: {path or 'body'} in body must be of type {want}: "
        f'"{_type_name(inst)}"',
    )


def _enum(inst: Any, arg: Any, node: dict[str, Any], path: str) -> tuple[str, str]:
    supported = ", ".join(_render(v) for v in arg if v is not None)
    return (
        "FieldValueNotSupported",
        f"Unsupported value: {_render(inst)}: supported values: {supported}",
    )


def _bound(relation: str, exclusive: str) -> _Message:
    """minimum or maximum: `greater than` / `less than`, `or equal to` unless exclusive."""

    def message(inst: Any, arg: Any, node: dict[str, Any], path: str) -> tuple[str, str]:
        rel = relation if node.get(exclusive) else f"{relation} or equal to"
        return (
            "FieldValueInvalid",
            f"Invalid value: {_render(inst)}: {path} in body should be {rel} {arg}",
        )

    return message


def _invalid(should: str, *, count: bool = False) -> _Message:
    """FieldValueInvalid: `<path> in body should <should>` ({arg} the keyword's value), shown
    with the value, or with its length (`count`)."""

    def message(inst: Any, arg: Any, node: dict[str, Any], path: str) -> tuple[str, str]:
        shown = len(inst) if count else _render(inst)
        return (
            "FieldValueInvalid",
            f"Invalid value: {shown}: {path} in body should " + should.format(arg=arg),
        )

    return message


_MESSAGES: dict[str, _Message] = {
    "type": _type,
    "enum": _enum,
    "minimum": _bound("greater than", "exclusiveMinimum"),
    "maximum": _bound("less than", "exclusiveMaximum"),
    "minLength": _invalid("be at least {arg} chars long"),
    "maxLength": lambda inst, arg, node, path: (
        "FieldValueTooLong",
        f"Too long: may not be more than {arg} bytes",
    ),
    "pattern": _invalid("match '{arg}'"),
    "minItems": _invalid("have at least {arg} items", count=True),
    "maxItems": lambda inst, arg, node, path: (
        "FieldValueTooMany",
        f"Too many: {len(inst)}: must have at most {arg} items",
    ),
}


def check_structural(schema: Any, path: str) -> list[Cause]:
    """The structural-schema rules a CRD must pass that clients can trip over most easily."""
    causes: list[Cause] = []
    if not isinstance(schema, dict):
        return [Cause("FieldValueRequired", "Required value: schemas are required", path)]
    if schema.get("type") != "object":
        causes.append(
            Cause(
                "FieldValueInvalid", 'Invalid value: "": must be object at the root', f"{path}.type"
            )
        )

    def walk(node: Any, p: str) -> None:
        if not isinstance(node, dict):
            return
        if (
            "type" not in node
            and not node.get("x-kubernetes-int-or-string")
            and not node.get("x-kubernetes-preserve-unknown-fields")
            and p != path
        ):
            causes.append(
                Cause(
                    "FieldValueRequired",
                    "Required value: must not be empty for specified object fields",
                    f"{p}.type",
                )
            )
        for name, sub in (node.get("properties") or {}).items():
            walk(sub, f"{p}.properties[{name}]")
        if isinstance(node.get("items"), dict):
            walk(node["items"], f"{p}.items")
        if isinstance(node.get("additionalProperties"), dict):
            walk(node["additionalProperties"], f"{p}.additionalProperties")

    walk(schema, path)
    return causes
