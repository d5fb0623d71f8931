"""Defaulting and validation of the built-in kinds, the part of kube-apiserver's per-kind
strategies that a client can observe.

Covered: Namespace (finalizer, phase, name label), Secret (`stringData`, base64 `data`, type,
immutability), ConfigMap (immutability), Pod (required containers and images, common defaults,
spec immutability), Deployment and ReplicaSet (selector required, matching template, immutable
selector, defaults).  Not covered: the full field-by-field validation of core/v1 and apps/v1
(unknown fields of built-in kinds are kept, not pruned).
"""

from __future__ import annotations

import base64
import binascii
import copy
import re
from typing import Any

from shared.api.meta import Obj

from . import selectors, validation
from .errors import Cause
from .resources import ResourceType
from .validation import DNS1123_LABEL, LABEL_MSG

DNS1123_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
LABEL_VALUE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?")
QUALIFIED_NAME = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")

SUBDOMAIN_MSG = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or "
    "'.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used "
    "for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
)


OBJECT_META_FIELDS = frozenset(
    {
        "name",
        "generateName",
        "namespace",
        "selfLink",
        "uid",
        "resourceVersion",
        "generation",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "labels",
        "annotations",
        "ownerReferences",
        "finalizers",
        "managedFields",
    }
)
_TYPE_META = {"apiVersion", "kind", "metadata"}
# Top-level fields of the built-in kinds (and Lease's spec, which is small enough to know).
KNOWN_FIELDS: dict[str, frozenset[str]] = {
    "Namespace": frozenset({*_TYPE_META, "spec", "status"}),
    "Secret": frozenset({*_TYPE_META, "data", "stringData", "type", "immutable"}),
    "ConfigMap": frozenset({*_TYPE_META, "data", "binaryData", "immutable"}),
    "Pod": frozenset({*_TYPE_META, "spec", "status"}),
    "Service": frozenset({*_TYPE_META, "spec", "status"}),
    "Event": frozenset(
        {
            *_TYPE_META,
            "involvedObject",
            "reason",
            "message",
            "source",
            "firstTimestamp",
            "lastTimestamp",
            "count",
            "type",
            "eventTime",
            "series",
            "action",
            "related",
            "reportingComponent",
            "reportingInstance",
        }
    ),
    "Lease": frozenset({*_TYPE_META, "spec"}),
    "Deployment": frozenset({*_TYPE_META, "spec", "status"}),
    "ReplicaSet": frozenset({*_TYPE_META, "spec", "status"}),
    "CustomResourceDefinition": frozenset({*_TYPE_META, "spec", "status"}),
}
LEASE_SPEC_FIELDS = frozenset(
    {
        "holderIdentity",
        "leaseDurationSeconds",
        "acquireTime",
        "renewTime",
        "leaseTransitions",
        "strategy",
        "preferredHolder",
    }
)


def prune_known_fields(rt: ResourceType, obj: Obj) -> list[str]:
    """Drop fields the kind does not have (as decoding into Go types does); return their paths.

    Checked: `metadata` of every kind, the top level of built-in kinds, Lease's `spec`.
    Deeper fields of built-in kinds are kept as sent (see docs/kubeapi.md)."""
    pruned: list[str] = []
    md = obj.get("metadata")
    if isinstance(md, dict):
        for k in [k for k in md if k not in OBJECT_META_FIELDS]:
            pruned.append(f"metadata.{k}")
            del md[k]
    if not rt.builtin:
        return pruned
    known = KNOWN_FIELDS.get(rt.kind)
    if known is not None:
        for k in [k for k in obj if k not in known]:
            pruned.append(k)
            del obj[k]
    if rt.kind == "Lease" and isinstance(obj.get("spec"), dict):
        for k in [k for k in obj["spec"] if k not in LEASE_SPEC_FIELDS]:
            pruned.append(f"spec.{k}")
            del obj["spec"][k]
    return pruned


def validate_name(rt: ResourceType, name: str) -> list[Cause]:
    if rt.kind == "Namespace":
        if len(name) > 63 or not DNS1123_LABEL.fullmatch(name):
            return [
                Cause("FieldValueInvalid", f'Invalid value: "{name}": {LABEL_MSG}', "metadata.name")
            ]
        return []
    if rt.group == "rbac.authorization.k8s.io":
        return _path_segment_name(name)
    if rt.kind == "Pod" and len(name) > 253:
        return [
            Cause(
                "FieldValueInvalid",
                f'Invalid value: "{name}": must be no more than 253 characters',
                "metadata.name",
            )
        ]
    if len(name) > 253 or not DNS1123_SUBDOMAIN.fullmatch(name):
        return [
            Cause("FieldValueInvalid", f'Invalid value: "{name}": {SUBDOMAIN_MSG}', "metadata.name")
        ]
    return []


def _path_segment_name(name: str) -> list[Cause]:
    """RBAC names (`system:discovery`) need only be a path segment (ValidatePathSegmentName)."""
    if name in (".", ".."):
        why = f"may not be '{name}'"
    elif bad := next((c for c in ("/", "%") if c in name), None):
        why = f"may not contain '{bad}'"
    else:
        return []
    return [Cause("FieldValueInvalid", f'Invalid value: "{name}": {why}', "metadata.name")]


def _qualified_key_ok(key: str) -> bool:
    if "/" in key:
        prefix, _, name = key.partition("/")
        if not prefix or len(prefix) > 253 or not DNS1123_SUBDOMAIN.fullmatch(prefix):
            return False
    else:
        name = key
    return 0 < len(name) <= 63 and bool(QUALIFIED_NAME.fullmatch(name))


def _bad_key(key: str, field: str) -> Cause:
    return Cause(
        "FieldValueInvalid",
        f'Invalid value: "{key}": name part must consist of alphanumeric '
        "characters, '-', '_' or '.', and must start and end with an alphanumeric "
        "character",
        field,
    )


def validate_metadata(md: Obj) -> list[Cause]:
    causes: list[Cause] = []
    for key, value in (md.get("labels") or {}).items():
        if not _qualified_key_ok(key):
            causes.append(_bad_key(key, "metadata.labels"))
        if not isinstance(value, str) or len(value) > 63 or not LABEL_VALUE.fullmatch(value):
            causes.append(
                Cause(
                    "FieldValueInvalid",
                    f'Invalid value: "{value}": a valid label must be an empty string or '
                    "consist of alphanumeric characters, '-', '_' or '.', and must start and end "
                    "with an alphanumeric character",
                    "metadata.labels",
                )
            )
    causes.extend(
        _bad_key(key, "metadata.annotations")
        for key in md.get("annotations") or {}
        if not _qualified_key_ok(key)
    )
    return causes


def default_pod_spec(spec: Obj) -> None:
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("securityContext", {})
    spec.setdefault("schedulerName", "default-scheduler")
    spec.setdefault("enableServiceLinks", True)
    for key in ("containers", "initContainers"):
        for c in spec.get(key) or []:
            if not isinstance(c, dict):
                continue
            image = str(c.get("image", ""))
            tagless = ":" not in image.rsplit("/", 1)[-1] and "@" not in image
            latest = image.endswith(":latest")
            c.setdefault("imagePullPolicy", "Always" if (tagless or latest) else "IfNotPresent")
            c.setdefault("terminationMessagePath", "/dev/termination-log")
            c.setdefault("terminationMessagePolicy", "File")
            c.setdefault("resources", {})
            for p in c.get("ports") or []:
                if isinstance(p, dict):
                    p.setdefault("protocol", "TCP")


def _validate_pod_spec(spec: Any, path: str) -> list[Cause]:
    if not isinstance(spec, dict):
        return [Cause("FieldValueRequired", "Required value", path)]
    containers = spec.get("containers")
    if not containers:
        return [Cause("FieldValueRequired", "Required value", f"{path}.containers")]
    causes = validation.containers(spec, path) + validation.restart_policy(spec, path)
    names: set[str] = set()
    for i, c in enumerate(containers):
        p = f"{path}.containers[{i}]"
        if not isinstance(c, dict) or not c.get("name"):
            causes.append(Cause("FieldValueRequired", "Required value", f"{p}.name"))
            continue
        if c["name"] in names:
            causes.append(
                Cause("FieldValueDuplicate", f'Duplicate value: "{c["name"]}"', f"{p}.name")
            )
        names.add(c["name"])
        if not c.get("image"):
            causes.append(Cause("FieldValueRequired", "Required value", f"{p}.image"))
    return causes


def _validate_selector_template(obj: Obj) -> list[Cause]:
    spec = obj.get("spec") or {}
    sel = spec.get("selector")
    if not sel or not (sel.get("matchLabels") or sel.get("matchExpressions")):
        return [Cause("FieldValueRequired", "Required value", "spec.selector")]
    causes: list[Cause] = []
    template = spec.get("template") or {}
    labels = (template.get("metadata") or {}).get("labels") or {}
    reqs = selectors.selector_from_label_selector(sel)
    if not selectors.labels_match(reqs, {"metadata": {"labels": labels}}):
        rendered = (
            "map[string]string{"
            + ", ".join(f'"{k}":"{v}"' for k, v in sorted(labels.items()))
            + "}"
        )
        causes.append(
            Cause(
                "FieldValueInvalid",
                f"Invalid value: {rendered}: `selector` does not match template `labels`",
                "spec.template.metadata.labels",
            )
        )
    causes.extend(_validate_pod_spec(template.get("spec"), "spec.template.spec"))
    if isinstance(template.get("spec"), dict):
        causes += validation.restart_policy(
            template["spec"], "spec.template.spec", allowed=("Always",)
        )
    return validation.replicas(spec) + causes


def _default_workload(obj: Obj, deployment: bool) -> None:
    spec = obj.setdefault("spec", {})
    spec.setdefault("replicas", 1)
    if deployment:
        spec.setdefault(
            "strategy",
            {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"},
            },
        )
        spec.setdefault("revisionHistoryLimit", 10)
        spec.setdefault("progressDeadlineSeconds", 600)
    template = spec.get("template")
    if isinstance(template, dict):
        template.setdefault("metadata", {})
        if isinstance(template.get("spec"), dict):
            default_pod_spec(template["spec"])


def _secret_data(obj: Obj) -> list[Cause]:
    """Fold `stringData` into base64 `data` (as the v1 conversion does), then validate."""
    causes: list[Cause] = []
    decoded: dict[str, bytes] = {}
    for k, v in (obj.get("data") or {}).items():
        try:
            decoded[k] = base64.b64decode(v, validate=True)
        except (binascii.Error, TypeError, ValueError):
            causes.append(
                Cause(
                    "FieldValueInvalid", f'Invalid value: "{v}": illegal base64 data', f"data[{k}]"
                )
            )
    string_data = obj.pop("stringData", None) or {}
    for k, v in string_data.items():
        decoded[k] = str(v).encode()
        obj.setdefault("data", {})[k] = base64.b64encode(decoded[k]).decode()
    return causes or validation.secret(obj, decoded)


def prepare(rt: ResourceType, obj: Obj, old: Obj | None) -> list[Cause]:
    """Default `obj` in place and return its validation errors (old is None on create)."""
    causes: list[Cause] = []
    kind = rt.kind if rt.builtin else ""
    if kind == "Namespace":
        obj.setdefault("spec", {}).setdefault("finalizers", ["kubernetes"])
        labels = obj["metadata"].setdefault("labels", {})
        labels["kubernetes.io/metadata.name"] = obj["metadata"]["name"]
        if old is None:
            obj["status"] = {"phase": "Active"}
    elif kind == "Secret":
        if not obj.get("type"):
            obj["type"] = "Opaque"
        causes += _secret_data(obj)
        if old is not None:
            causes += _immutable_data(obj, old)
            if obj.get("type") != old.get("type"):
                causes.append(
                    Cause(
                        "FieldValueInvalid",
                        f'Invalid value: "{obj.get("type")}": field is immutable',
                        "type",
                    )
                )
    elif kind == "ConfigMap":
        causes += validation.config_map(obj)
        if old is not None:
            causes += _immutable_data(obj, old)
    elif kind == "Pod":
        spec = obj.setdefault("spec", {})
        causes += _validate_pod_spec(spec, "spec")
        if not causes:
            default_pod_spec(spec)
            spec.setdefault("serviceAccountName", "default")
            spec.setdefault("serviceAccount", spec["serviceAccountName"])
            spec.setdefault("priority", 0)
            spec.setdefault("preemptionPolicy", "PreemptLowerPriority")
        if old is None:
            obj["status"] = {"phase": "Pending", "qosClass": "BestEffort"}
        elif not causes:
            causes += _pod_spec_immutable(spec, old.get("spec") or {})
    elif kind == "Service":
        causes += _prepare_service(obj, old)
    elif kind in ("Deployment", "ReplicaSet"):
        _default_workload(obj, kind == "Deployment")
        causes += _validate_selector_template(obj)
        if old is not None and (obj.get("spec") or {}).get("selector") != (
            old.get("spec") or {}
        ).get("selector"):
            causes.append(
                Cause(
                    "FieldValueInvalid",
                    'Invalid value: "object": field is immutable',
                    "spec.selector",
                )
            )
    return causes


def _prepare_service(obj: Obj, old: Obj | None) -> list[Cause]:
    """The defaults of SetDefaults_Service and the service REST storage (the cluster IP itself
    is allocated by `operations`); ports are required but for ExternalName Services."""
    spec = obj.setdefault("spec", {})
    kind = spec.setdefault("type", "ClusterIP")
    if kind != "ExternalName":
        spec.setdefault("sessionAffinity", "None")
        spec.setdefault("ipFamilies", ["IPv4"])
        spec.setdefault("ipFamilyPolicy", "SingleStack")
        spec.setdefault("internalTrafficPolicy", "Cluster")
        if not spec.get("ports"):
            return [validation.required("spec.ports")]
    for port in spec.get("ports") or []:
        if isinstance(port, dict):
            port.setdefault("protocol", "TCP")
            port.setdefault("targetPort", port.get("port"))
    if old is None:
        obj["status"] = {"loadBalancer": {}}
    elif (old.get("spec") or {}).get("clusterIP"):
        spec.setdefault("clusterIP", old["spec"]["clusterIP"])
        spec.setdefault("clusterIPs", old["spec"].get("clusterIPs", [old["spec"]["clusterIP"]]))
    return []


def _immutable_data(obj: Obj, old: Obj) -> list[Cause]:
    if not old.get("immutable"):
        return []
    causes: list[Cause] = []
    if not obj.get("immutable"):
        causes.append(
            Cause(
                "FieldValueForbidden",
                "Forbidden: field is immutable when `immutable` is set",
                "immutable",
            )
        )
    causes.extend(
        Cause("FieldValueForbidden", "Forbidden: field is immutable when `immutable` is set", f)
        for f in ("data", "binaryData")
        if (obj.get(f) or {}) != (old.get(f) or {})
    )
    return causes


DEFAULT_GRACE_PERIOD = 30  # seconds: core/v1 DefaultTerminationGracePeriodSeconds


def pod_grace_period(pod: Obj, options: Obj) -> int:
    """The grace period of a Pod's deletion, as the pod strategy's CheckGracefulDelete decides
    it: the options' `gracePeriodSeconds`, else the Pod's `terminationGracePeriodSeconds`; 0 (at
    once) for a Pod never bound to a node or already terminated; a negative one is 1."""
    spec, status = pod.get("spec") or {}, pod.get("status") or {}
    asked = options.get("gracePeriodSeconds")
    period = int(asked if asked is not None else spec.get("terminationGracePeriodSeconds", 0) or 0)
    if not spec.get("nodeName") or status.get("phase") in ("Succeeded", "Failed"):
        period = 0
    return 1 if period < 0 else period


def _pod_spec_immutable(spec: Obj, old: Obj) -> list[Cause]:
    def blank(s: Obj) -> Obj:
        s = copy.deepcopy(s)
        for key in ("containers", "initContainers"):
            for c in s.get(key) or []:
                c.pop("image", None)
        s.pop("activeDeadlineSeconds", None)
        s.pop("tolerations", None)
        s.pop("terminationGracePeriodSeconds", None)
        return s

    if blank(spec) != blank(old):
        return [
            Cause(
                "FieldValueForbidden",
                "Forbidden: pod updates may not change fields other than "
                "`spec.containers[*].image`,`spec.initContainers[*].image`,"
                "`spec.activeDeadlineSeconds`,`spec.tolerations` "
                "(only additions to existing tolerations),`spec.terminationGracePeriodSeconds` "
                "(allow it to be set to 1 if it was previously negative)",
                "spec",
            )
        ]
    return []
