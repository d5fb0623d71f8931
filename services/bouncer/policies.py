"""The bouncer's decisions, as pure functions of (directive, observed objects, issuance).

Nothing here does I/O, sleeps or reads a clock: `bounce.py` gathers the objects and acts on
what these functions decide, so every decision is a row in a table test.

The durable record, and what it means (see docs/bouncer.md):

- `status.issuanceId == X` and `status.podsBounced` has `n` entries: the pods of selectors
  `0 .. n-1` have been deleted (or rolled) for issuance `X`; entry `i` names them.
- Selectors `0 .. n-2` also had their replacements confirmed Ready (selector `i+1` is only
  bounced after selector `i` was confirmed). Selector `n-1` may still be waiting, so a run that
  resumes from the record confirms it again before it bounces selector `n`.
- Any other `issuanceId` (or none) means nothing has been bounced for `X` yet.

Deliberately not here: how long to wait (the settings' deadlines), and how to wait (watches).
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from shared.api.meta import Obj, metadata
from shared.api.v1alpha2 import (
    BouncedPodSet,
    PodBounceDirectiveSpec,
    PodBounceDirectiveStatus,
    PodSelector,
    RootCertSync,
)
from shared.events import BouncedSelector

RESTARTED_FOR = "meshtrust.io/restarted-for-issuance"
"""Pod-template annotation set by the RolloutRestart strategy: the issuance the rollout is for.
Setting it again to the same value changes nothing, so a resumed bounce never rolls twice."""

RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"
"""The annotation `kubectl rollout restart` sets; set alongside, so operators recognise it."""

_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS1123_SUBDOMAIN = re.compile(
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
)
_LABEL_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")


@dataclass(frozen=True, slots=True)
class WaitResult:
    """The answer of a wait condition: `ok`, and in words what is missing when it is not.

    (Not a `shared.controller.policy.Check`: a wait is re-evaluated until it holds, it does
    not deny.)"""

    ok: bool
    detail: str


# --- steps ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Start:
    """The record belongs to another issuance (or none): reset it to this one, empty."""


@dataclass(frozen=True, slots=True)
class Bounce:
    """Bounce selector `index`: wait for the root cert sync, delete (or roll), record."""

    index: int


@dataclass(frozen=True, slots=True)
class AwaitReady:
    """Selector `index` is recorded; wait until its replacements are Ready."""

    index: int


@dataclass(frozen=True, slots=True)
class Finished:
    """Every selector is recorded and the last one confirmed: publish the outcome."""


Step = Start | Bounce | AwaitReady | Finished


def next_step(
    spec: PodBounceDirectiveSpec,
    status: PodBounceDirectiveStatus,
    *,
    issuance: str,
    confirmed: int,
) -> Step:
    """What to do next for `issuance`. `confirmed` is the highest selector index whose
    replacements this run has seen Ready (-1 for none): the record cannot say it for the last
    recorded selector, so a run starts by confirming that one again."""
    if status.issuance_id != issuance:
        return Start()
    recorded = min(len(status.pods_bounced), len(spec.pods_to_bounce))
    if recorded > 0 and confirmed < recorded - 1:
        return AwaitReady(recorded - 1)
    if recorded < len(spec.pods_to_bounce):
        return Bounce(recorded)
    return Finished()


def started(issuance: str) -> PodBounceDirectiveStatus:
    """The record of an issuance for which nothing has been bounced yet."""
    return PodBounceDirectiveStatus(issuance_id=issuance, pods_bounced=())


def record_selector(
    status: PodBounceDirectiveStatus, *, issuance: str, index: int, pods: Sequence[str]
) -> PodBounceDirectiveStatus:
    """The record with selector `index` bounced (its pods named), for `issuance`.

    Entries before `index` are kept; anything at or after it is replaced (there is none when
    selectors are bounced in order). Raises ValueError when the record is not of `issuance` or
    lacks an earlier selector: the caller lost its lock on the directive.
    """
    if status.issuance_id != issuance:
        raise ValueError(
            f"the record is of issuance {status.issuance_id!r}, not {issuance!r}; "
            "another writer reset it"
        )
    if len(status.pods_bounced) < index:
        raise ValueError(f"selector {index} cannot be recorded before selectors 0..{index - 1}")
    entry = BouncedPodSet(bounced_pods=tuple(pods))
    return status.model_copy(update={"pods_bounced": (*status.pods_bounced[:index], entry)})


def bounced_selectors(
    status: PodBounceDirectiveStatus, *, issuance: str
) -> tuple[BouncedSelector, ...]:
    """What `bounce.completed` reports: the recorded pods per selector, for `issuance` only."""
    if status.issuance_id != issuance:
        return ()
    return tuple(
        BouncedSelector(index=i, pods=entry.bounced_pods)
        for i, entry in enumerate(status.pods_bounced)
    )


def superseded(*, current: str | None, requested: str) -> str | None:
    """Why a request must not be acted on, judged by the IssuedCertificate's current issuance;
    None when it is the current one. Bouncing for an old issuance would restart every pod for a
    certificate that is no longer the one in the Secret."""
    if current == requested:
        return None
    if current is None:
        return f"the IssuedCertificate has no issuance yet; {requested} is not it"
    return f"issuance {requested} was superseded by {current}; not bouncing for it"


# --- validating the directive -----------------------------------------------------------------


def _label_key_problem(key: str) -> str | None:
    prefix, slash, name = key.rpartition("/")
    if slash and (not prefix or len(prefix) > 253 or not _DNS1123_SUBDOMAIN.match(prefix)):
        return f"label key {key!r}: the prefix must be a DNS-1123 subdomain"
    if not name or len(name) > 63 or not _LABEL_NAME.match(name):
        return (
            f"label key {key!r}: the name must be 1-63 alphanumerics, '-', '_' or '.', "
            "starting and ending with an alphanumeric"
        )
    return None


def _label_value_problem(key: str, value: str) -> str | None:
    if value and (len(value) > 63 or not _LABEL_NAME.match(value)):
        return (
            f"label {key}={value!r}: a value must be at most 63 alphanumerics, '-', '_' or '.', "
            "starting and ending with an alphanumeric"
        )
    return None


def spec_problems(spec: PodBounceDirectiveSpec) -> list[str]:
    """Everything that makes the directive unusable, each naming its field; empty when fine.

    Checked for the whole directive before anything is bounced, so that a bad selector 2 does
    not leave selector 1 restarted and the rest undone.
    """
    problems: list[str] = []
    for i, selector in enumerate(spec.pods_to_bounce):
        where = f"spec.podsToBounce[{i}]"
        if not _DNS1123_LABEL.match(selector.namespace) or len(selector.namespace) > 63:
            problems.append(f"{where}.namespace {selector.namespace!r} is not a namespace name")
        for key, value in selector.labels.items():
            found = (_label_key_problem(key), _label_value_problem(key, value))
            problems.extend(f"{where}.labels: {p}" for p in found if p is not None)
    return problems


def label_selector(selector: PodSelector) -> str:
    """The `labelSelector` query of a selector (equality on every label; empty: every pod)."""
    return ",".join(f"{k}={v}" for k, v in sorted(selector.labels.items()))


def describe(index: int, selector: PodSelector) -> str:
    """How a selector is named in errors an operator reads."""
    labels = label_selector(selector) or "<every pod>"
    return f"selector {index} (namespace {selector.namespace}, labels {labels})"


# --- pods ---------------------------------------------------------------------------------------


def pod_name(pod: Obj) -> str:
    return metadata(pod).name


def is_terminating(obj: Obj) -> bool:
    return metadata(obj).deletion_timestamp is not None


def is_ready(pod: Obj) -> bool:
    """The pod's `Ready` condition is True (what a Service and `kubectl get` go by)."""
    status = pod.get("status")
    conditions = status.get("conditions") if isinstance(status, Mapping) else None
    for condition in conditions or ():
        if isinstance(condition, Mapping) and condition.get("type") == "Ready":
            return condition.get("status") == "True"
    return False


def victims(pods: Iterable[Obj]) -> list[tuple[str, str]]:
    """(name, uid) of the pods to delete, by name: those not already terminating."""
    out = [(pod_name(p), metadata(p).uid) for p in pods if not is_terminating(p) and pod_name(p)]
    return sorted(out)


def ready_replacements(pods: Iterable[Obj], *, bounced: Iterable[str], wanted: int) -> WaitResult:
    """Whether at least `wanted` matching pods are Ready, not counting the bounced ones (by
    name) nor any pod being deleted."""
    gone = set(bounced)
    ready = sorted(
        pod_name(p)
        for p in pods
        if not is_terminating(p) and pod_name(p) not in gone and is_ready(p)
    )
    if len(ready) >= wanted:
        return WaitResult(True, f"{len(ready)} Ready replacement pods")
    noun = "pod" if wanted == 1 else "pods"
    return WaitResult(
        False,
        f"{len(ready)} of {wanted} Ready replacement {noun} (not counting the {len(gone)} bounced"
        + (f"; Ready: {', '.join(ready)}" if ready else "")
        + ")",
    )


# --- rootCertSync -------------------------------------------------------------------------------


def root_cert_synced(
    sync: RootCertSync, *, secret: Obj | None, config_map: Obj | None
) -> WaitResult:
    """Whether the ConfigMap's key holds what the Secret's key holds (the root has reached the
    workloads' namespace). Trailing whitespace is not a difference: PEM writers disagree on the
    final newline. A missing object or key is not synced, and says which."""
    s, c = sync.secret_ref, sync.config_map_ref
    if secret is None:
        return WaitResult(False, f"Secret {s.namespace}/{s.name} not found")
    raw = (secret.get("data") or {}).get(sync.secret_key)
    if raw is None:
        return WaitResult(False, f"Secret {s.namespace}/{s.name} has no key {sync.secret_key}")
    try:
        wanted = base64.b64decode(str(raw), validate=True)
    except (binascii.Error, ValueError):
        return WaitResult(
            False, f"Secret {s.namespace}/{s.name} key {sync.secret_key} is not base64"
        )
    if config_map is None:
        return WaitResult(False, f"ConfigMap {c.namespace}/{c.name} not found")
    have = (config_map.get("data") or {}).get(sync.config_map_key)
    if have is None:
        return WaitResult(
            False, f"ConfigMap {c.namespace}/{c.name} has no key {sync.config_map_key}"
        )
    if str(have).encode().rstrip() != wanted.rstrip():
        return WaitResult(
            False,
            f"ConfigMap {c.namespace}/{c.name} key {sync.config_map_key} does not yet hold the "
            f"root certificate of Secret {s.namespace}/{s.name} key {sync.secret_key}",
        )
    return WaitResult(True, "root certificate synced")


# --- RolloutRestart -----------------------------------------------------------------------------


def controller_of(obj: Obj) -> tuple[str, str] | None:
    """(kind, name) of the object's controller (the ownerReference with `controller: true`)."""
    for ref in metadata(obj).get("ownerReferences") or ():
        if isinstance(ref, Mapping) and ref.get("controller"):
            return str(ref.get("kind") or ""), str(ref.get("name") or "")
    return None


def template_annotation(deployment: Obj) -> str | None:
    template = (deployment.get("spec") or {}).get("template") or {}
    value = metadata(template).annotations.get(RESTARTED_FOR)
    return None if value is None else str(value)


def restart_patch(*, issuance: str, now: str) -> dict[str, Any]:
    """The merge patch that restarts a Deployment for `issuance`, as `kubectl rollout restart`
    does (a pod-template annotation change rolls the pods)."""
    annotations = {RESTARTED_FOR: issuance, RESTARTED_AT: now}
    return {"spec": {"template": {"metadata": {"annotations": annotations}}}}


def rolled_pods(pods: Iterable[Obj], *, issuance: str) -> list[str]:
    """The pods a restart for `issuance` replaces: live ones not yet from its template."""
    return sorted(
        pod_name(p)
        for p in pods
        if not is_terminating(p)
        and pod_name(p)
        and metadata(p).annotations.get(RESTARTED_FOR) != issuance
    )


def rollout_complete(deployment: Obj | None, *, name: str, issuance: str) -> WaitResult:
    """`kubectl rollout status` for a Deployment restarted for `issuance`: the template carries
    the issuance, the controller has seen it, every replica is updated and available, and no
    old replica is left."""
    if deployment is None:
        return WaitResult(False, f"Deployment {name} not found")
    if template_annotation(deployment) != issuance:
        return WaitResult(
            False, f"Deployment {name} has not been restarted for issuance {issuance}"
        )
    meta, spec = metadata(deployment), deployment.get("spec") or {}
    status = deployment.get("status") or {}
    wanted = int(spec.get("replicas", 1))
    if int(meta.get("generation") or 0) > int(status.get("observedGeneration") or 0):
        return WaitResult(False, f"Deployment {name}: the restart is not yet observed")
    updated = int(status.get("updatedReplicas") or 0)
    if updated < wanted:
        return WaitResult(False, f"Deployment {name}: {updated} of {wanted} replicas updated")
    total = int(status.get("replicas") or 0)
    if total > updated:
        return WaitResult(False, f"Deployment {name}: {total - updated} old replicas still running")
    available = int(status.get("availableReplicas") or 0)
    if available < updated:
        return WaitResult(False, f"Deployment {name}: {available} of {updated} replicas available")
    return WaitResult(True, f"Deployment {name} rolled out")


def restarted_ready(pods: Iterable[Obj], *, issuance: str, wanted: int) -> WaitResult:
    """At least `wanted` Ready pods from the template restarted for `issuance`."""
    fresh = [
        p
        for p in pods
        if not is_terminating(p) and metadata(p).annotations.get(RESTARTED_FOR) == issuance
    ]
    ready = sum(1 for p in fresh if is_ready(p))
    if ready >= wanted:
        return WaitResult(True, f"{ready} Ready restarted pods")
    return WaitResult(False, f"{ready} of {wanted} restarted pods Ready")


def all_of(results: Iterable[WaitResult]) -> WaitResult:
    """Every condition holds; otherwise the details of those that do not, joined."""
    results = list(results)
    failing = [c.detail for c in results if not c.ok]
    if failing:
        return WaitResult(False, "; ".join(failing))
    return WaitResult(True, "; ".join(c.detail for c in results))
