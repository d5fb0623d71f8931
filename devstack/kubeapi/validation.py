"""Field rules of core/v1 and apps/v1 that kube-apiserver's validation applies and a client can
trip over, with its wording (k8s.io/kubernetes/pkg/apis/core/validation, apps/validation and
k8s.io/apimachinery/pkg/util/validation).

Covered: ConfigMap and Secret keys, sizes and `data`/`binaryData` duplicates, the keys each
built-in Secret type requires, container names, `restartPolicy`, `replicas`. Each rule is a
small function from (part of) an object to its causes; `builtins.prepare` calls them. Not
covered: the rest of the Pod spec (volumes, probes, resources, ...), which stays as sent.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

from shared.api.meta import Obj

from .errors import Cause

MAX_SECRET_SIZE = 1024 * 1024  # core.MaxSecretSize, the limit of ConfigMap data too
DNS1123_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
CONFIG_KEY = re.compile(r"[-._a-zA-Z0-9]+")

LABEL_MSG = (
    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and "
    "must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used "
    "for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
)
CONFIG_KEY_MSG = (
    "a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. "
    "'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is "
    "'[-._a-zA-Z0-9]+')"
)
REDACTED = "<secret contents redacted>"

# The keys each Secret type requires (core/v1 SecretType constants)
TLS = "kubernetes.io/tls"
DOCKER_CONFIG_JSON = "kubernetes.io/dockerconfigjson"
DOCKER_CFG = "kubernetes.io/dockercfg"
BASIC_AUTH = "kubernetes.io/basic-auth"
SSH_AUTH = "kubernetes.io/ssh-auth"
SERVICE_ACCOUNT_TOKEN = "kubernetes.io/service-account-token"  # noqa: S105 (a type name)
RESTART_POLICIES = ("Always", "OnFailure", "Never")


def required(path: str) -> Cause:
    return Cause("FieldValueRequired", "Required value", path)


def invalid(path: str, value: Any, detail: str) -> Cause:
    return Cause("FieldValueInvalid", f"Invalid value: {_go_value(value)}: {detail}", path)


def not_supported(path: str, value: str, supported: Iterable[str]) -> Cause:
    listed = ", ".join(json.dumps(v) for v in supported)
    return Cause(
        "FieldValueNotSupported",
        f"Unsupported value: {json.dumps(value)}: supported values: {listed}",
        path,
    )


def too_long(path: str, limit: int) -> Cause:
    return Cause("FieldValueTooLong", f"Too long: may not be more than {limit} bytes", path)


def _go_value(value: Any) -> str:
    """How field.Error renders a bad value: strings quoted, numbers and booleans bare."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return json.dumps(value)


def config_key(key: str, path: str) -> list[Cause]:
    """validation.IsConfigMapKey, for ConfigMap and Secret keys."""
    details = []
    if len(key) > 253:
        details.append("must be no more than 253 characters")
    if not CONFIG_KEY.fullmatch(key):
        details.append(CONFIG_KEY_MSG)
    if key == ".":
        details.append("must not be '.'")
    elif key == "..":
        details.append("must not be '..'")
    elif key.startswith(".."):
        details.append("must not start with '..'")
    return [invalid(path, key, d) for d in details]


def base64_size(encoded: str) -> int:
    """Bytes that (valid) base64 text decodes to, without decoding it."""
    return len(encoded) // 4 * 3 - encoded[-2:].count("=")


def config_map(obj: Obj) -> list[Cause]:
    """ValidateConfigMap: keys, a key in both `data` and `binaryData`, the 1 MiB total."""
    data, binary = obj.get("data") or {}, obj.get("binaryData") or {}
    causes: list[Cause] = []
    size = 0
    for key, value in data.items():
        causes += config_key(key, f"data[{key}]")
        if key in binary:
            causes.append(invalid(f"data[{key}]", key, "duplicate of key present in binaryData"))
        size += len(str(value).encode())
    for key, value in binary.items():
        causes += config_key(key, f"binaryData[{key}]")
        size += base64_size(str(value))
    if size > MAX_SECRET_SIZE:
        causes.append(too_long("[]", MAX_SECRET_SIZE))  # field.NewPath(""): the whole object
    return causes


def secret(obj: Obj, decoded: dict[str, bytes]) -> list[Cause]:
    """ValidateSecret on `data` (after `stringData` was folded in; `decoded`: its values)."""
    causes: list[Cause] = []
    for key in decoded:
        causes += config_key(key, f"data[{key}]")
    if sum(len(v) for v in decoded.values()) > MAX_SECRET_SIZE:
        causes.append(too_long("data", MAX_SECRET_SIZE))
    kind = obj.get("type")
    if kind == SERVICE_ACCOUNT_TOKEN:
        annotations = obj["metadata"].get("annotations") or {}
        if not annotations.get("kubernetes.io/service-account.name"):
            causes.append(required("metadata.annotations[kubernetes.io/service-account.name]"))
    elif kind in (DOCKER_CFG, DOCKER_CONFIG_JSON):
        key = ".dockercfg" if kind == DOCKER_CFG else ".dockerconfigjson"
        if key not in decoded:
            causes.append(required(f"data[{key}]"))
        elif (problem := _json_object_problem(decoded[key])) is not None:
            causes.append(invalid(f"data[{key}]", REDACTED, problem))
    elif kind == BASIC_AUTH:
        if "username" not in decoded and "password" not in decoded:
            causes += [required("data[username]"), required("data[password]")]
    elif kind == SSH_AUTH:
        if not decoded.get("ssh-privatekey"):
            causes.append(required("data[ssh-privatekey]"))
    elif kind == TLS:
        causes += [required(f"data[{k}]") for k in ("tls.crt", "tls.key") if k not in decoded]
    return causes


def _json_object_problem(raw: bytes) -> str | None:
    """What Go's json.Unmarshal into a map says of `raw`, or None when it is a JSON object."""
    try:
        value = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        text = raw.lstrip()
        if not text:
            return "unexpected end of JSON input"
        return f"invalid character '{chr(text[0])}' looking for beginning of value"
    if not isinstance(value, dict):
        kind = {list: "array", str: "string", bool: "bool"}.get(type(value), "number")
        return f"json: cannot unmarshal {kind} into Go value of type map[string]interface {{}}"
    return None


def containers(spec: Obj, path: str) -> list[Cause]:
    """Container names are DNS-1123 labels (validateContainers, validateInitContainers)."""
    causes: list[Cause] = []
    for key in ("initContainers", "containers"):
        for i, c in enumerate(spec.get(key) or []):
            name = c.get("name") if isinstance(c, dict) else None
            if not isinstance(name, str) or not name:
                continue  # "Required value" is reported with the other required fields
            where = f"{path}.{key}[{i}].name"
            if len(name) > 63:
                causes.append(invalid(where, name, "must be no more than 63 characters"))
            if not DNS1123_LABEL.fullmatch(name):
                causes.append(invalid(where, name, LABEL_MSG))
    return causes


def restart_policy(
    spec: Obj, path: str, *, allowed: tuple[str, ...] = RESTART_POLICIES
) -> list[Cause]:
    """validateRestartPolicy; a ReplicaSet's or Deployment's template allows only Always."""
    policy = spec.get("restartPolicy")
    if policy is None:
        return []
    if policy not in allowed:
        return [not_supported(f"{path}.restartPolicy", str(policy), allowed)]
    return []


def replicas(spec: Obj) -> list[Cause]:
    """ValidateNonnegativeField on `spec.replicas`."""
    value = spec.get("replicas")
    if isinstance(value, int) and not isinstance(value, bool) and value < 0:
        return [invalid("spec.replicas", value, "must be greater than or equal to 0")]
    return []
