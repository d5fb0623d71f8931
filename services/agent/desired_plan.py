"""The desired-state applier's decisions, pure: (entry, objects observed) -> actions.

`plan` is what the mirror and the informers' cache say about one desired key: delete managed
copies that should not be there, report a declaration this cluster cannot hold, or bring the
object into line (`Create` at once when not even the cache has it, else `Compare`). `converge`
is the second look, on the object read fresh: create it, replace it, or leave an unmanaged one
alone. The bodies written are built here too. `desired.DesiredState` executes the actions.

Deliberately not here: any I/O, logging or clock; what an action's request answers (an
`AlreadyExists` or a 422 is the executor's to handle).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

from services.agent.objects import (
    DECLARATION_GENERATION,
    DECLARATION_UID,
    DESIRED_KEY,
    MANAGED_BY,
    MANAGED_BY_VALUE,
    SIGNING_CHAIN,
    TRUST_EPOCH,
    annotations_of,
    is_managed,
)
from shared.api.meta import Obj, ObjectKey, metadata
from shared.api.v1alpha2 import IssuedCertificateSpec, PodBounceDirectiveSpec
from shared.events import DesiredKind, DesiredObject
from shared.k8s.resources import ISSUED_CERTIFICATES, POD_BOUNCE_DIRECTIVES, Resource

RESOURCES: Mapping[DesiredKind, Resource] = {
    DesiredKind.ISSUED_CERTIFICATE: ISSUED_CERTIFICATES,
    DesiredKind.POD_BOUNCE_DIRECTIVE: POD_BOUNCE_DIRECTIVES,
}
_SPEC_MODELS: Mapping[DesiredKind, type[BaseModel]] = {
    DesiredKind.ISSUED_CERTIFICATE: IssuedCertificateSpec,
    DesiredKind.POD_BOUNCE_DIRECTIVE: PodBounceDirectiveSpec,
}

# --- actions ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class KeepUnreadable:
    """The entry cannot be read and no good value was seen: leave the managed object as it is
    (and say so)."""

    error: str


@dataclass(frozen=True, slots=True)
class Delete:
    """Delete this managed object (uid precondition)."""

    obj: Obj


@dataclass(frozen=True, slots=True)
class Refuse:
    """Report the declaration as one this cluster cannot hold (once per generation)."""

    desired: DesiredObject
    error: str


@dataclass(frozen=True, slots=True)
class Create:
    """Create the declared object. `first`: sent without a read (the cache has no copy); an
    `AlreadyExists` then means the cache is behind, and the object is compared after all."""

    desired: DesiredObject
    first: bool = False


@dataclass(frozen=True, slots=True)
class Compare:
    """Read the object fresh and `converge` on it."""

    desired: DesiredObject


@dataclass(frozen=True, slots=True)
class Replace:
    """PUT the declared spec and our metadata over `current` (its resourceVersion)."""

    current: Obj
    desired: DesiredObject


@dataclass(frozen=True, slots=True)
class LeaveAlone:
    """An object of the declared name that meshtrust does not manage: a Warning Event only."""

    current: Obj


Action = KeepUnreadable | Delete | Refuse | Create | Compare | Replace | LeaveAlone

# --- deciding ---------------------------------------------------------------------------------


def plan(
    *,
    desired: DesiredObject | None,
    unreadable: str | None,
    cached: Sequence[Obj],
    namespaces: frozenset[str],
    cluster: str,
) -> list[Action]:
    """What to do for one desired key: `desired` is the mirror's entry (None: absent, or
    unreadable with no good value seen, then `unreadable` says why), `cached` the objects of
    that kind and name in the informers' cache, `namespaces` the watched ones (empty: all)."""
    managed = [obj for obj in cached if is_managed(obj)]
    if desired is None and unreadable is not None:
        # An entry is there but cannot be read, and no good value was seen before it: what it
        # declares is unknown, so nothing is created, changed or deleted.
        return [KeepUnreadable(unreadable)] if managed else []
    if desired is None:
        return [Delete(obj) for obj in managed]
    actions: list[Action] = [
        Delete(obj) for obj in managed if ObjectKey.of(obj).namespace != desired.namespace
    ]
    if namespaces and desired.namespace not in namespaces:
        error = (
            f"namespace {desired.namespace!r} is not watched by the agent of cluster {cluster!r}"
        )
        return [*actions, Refuse(desired, error)]
    here = any(ObjectKey.of(obj).namespace == desired.namespace for obj in cached)
    # Not even in the cache: create at once (a read first would almost always say absent).
    return [*actions, Compare(desired) if here else Create(desired, first=True)]


def converge(key: str, desired: DesiredObject, current: Obj | None) -> list[Action]:
    """The object as read fresh (`current`, None: absent) against the entry at `key`."""
    if current is None:
        return [Create(desired)]
    if not is_managed(current):
        return [LeaveAlone(current)]
    if differs(key, current, desired):
        return [Replace(current, desired)]
    return []


def differs(key: str, current: Obj, desired: DesiredObject) -> bool:
    """Whether the managed object `current` is not what the entry at `key` declares."""
    labels = metadata(current).labels
    notes = annotations_of(current)
    if labels.get(MANAGED_BY) != MANAGED_BY_VALUE:
        return True
    expected = our_annotations(key, desired)
    if any(notes.get(k) != v for k, v in expected.items()):
        return True
    if any(k in notes and k not in expected for k in (SIGNING_CHAIN, TRUST_EPOCH)):
        return True
    # Compare through the model: the API server materialises the CRD's defaults
    # (certOptions.ttlDays...), so the stored spec is a superset of the declared one.
    model = _SPEC_MODELS[desired.kind]
    try:
        return bool(
            model.model_validate(current.get("spec") or {}) != model.model_validate(desired.spec)
        )
    except ValidationError:
        return current.get("spec") != desired.spec


def shape(obj: Mapping[str, Any]) -> tuple[object, ...]:
    """What the applier owns of an object: its spec, labels and annotations."""
    meta = metadata(obj)
    return (obj.get("spec"), meta.get("labels"), meta.get("annotations"))


# --- what is written --------------------------------------------------------------------------


def our_annotations(key: str, desired: DesiredObject) -> dict[str, str]:
    """Our annotations on a desired object; the signing-chain fingerprint and the trust epoch
    (IssuedCertificates only) tell the reconciler when the issuer's CA or the rotation step
    changed, so that it re-issues."""
    notes = {
        DECLARATION_UID: desired.uid,
        DECLARATION_GENERATION: str(desired.generation),
        DESIRED_KEY: key,
    }
    if desired.signing_chain_fingerprint is not None:
        notes[SIGNING_CHAIN] = desired.signing_chain_fingerprint
    if epoch := desired_trust_epoch(desired):
        notes[TRUST_EPOCH] = epoch
    return notes


def desired_trust_epoch(desired: DesiredObject) -> str | None:
    """The trust epoch the issuer declares on a desired IssuedCertificate during a root rotation
    (`meshtrust.io/trust-epoch`, docs/agent.md "Trust bundle"): the entry's `trust_epoch`, or
    that key of its `annotations`, whichever form the entry carries; None outside a rotation.
    Copied onto the IssuedCertificate, where a change of it re-issues."""
    value = getattr(desired, "trust_epoch", None)
    if value is None:
        annotations = getattr(desired, "annotations", None)
        if isinstance(annotations, Mapping):
            value = annotations.get(TRUST_EPOCH)
    return value if isinstance(value, str) and value else None


def create_body(key: str, desired: DesiredObject) -> Obj:
    resource = RESOURCES[desired.kind]
    return {
        "apiVersion": resource.api_version,
        "kind": resource.kind,
        "metadata": {
            "name": desired.name,
            "namespace": desired.namespace,
            "labels": {MANAGED_BY: MANAGED_BY_VALUE},
            "annotations": our_annotations(key, desired),
        },
        "spec": dict(desired.spec),
    }


def replace_body(key: str, current: Obj, desired: DesiredObject) -> Obj:
    """`current` with the declared spec and our label and annotations; status and everyone
    else's labels and annotations kept (a stale signing-chain fingerprint or epoch is not)."""
    meta = dict(metadata(current))
    meta["labels"] = {**(meta.get("labels") or {}), MANAGED_BY: MANAGED_BY_VALUE}
    stale = (SIGNING_CHAIN, TRUST_EPOCH)
    kept = {k: v for k, v in (meta.get("annotations") or {}).items() if k not in stale}
    meta["annotations"] = {**kept, **our_annotations(key, desired)}
    return {**current, "metadata": meta, "spec": dict(desired.spec)}
