"""Desired state: the KV bucket `meshtrust-desired` under `<cluster>.`, applied to this cluster.

The watch keeps an in-memory mirror of this cluster's entries (every `Snapshot` replaces it, so
whatever was missed while disconnected is repaired) and queues each desired key whose entry
changed. The IssuedCertificate and PodBounceDirective informers queue the key of every managed
object whose spec, labels or annotations changed, or that was deleted: that is drift repair. A
worker then makes the cluster match the entry, one key at a time:

- entry present, object absent: create it, labelled `app.kubernetes.io/managed-by: meshtrust`,
  annotated with the declaration's uid and generation, in the entry's namespace;
- entry present, managed object differs (spec, our label or annotations): replace it (status and
  everyone else's labels and annotations kept); a managed copy left in another namespace (the
  entry moved) is deleted;
- entry present, an object of that name exists but is *not* managed: left alone (its spec is
  someone else's), logged and recorded as an Event;
- entry absent: the managed object of that kind and name is deleted (unmanaged ones never are).

An entry that the cluster refuses (422: e.g. no `issuedCertificateSecret`, empty `hosts`) cannot
exist here, so it cannot go FAILED here either: a `status.changed` FAILED naming the fields the
API server named is published instead, once per declaration generation, and the issuer mirrors it
onto the declaration. Nothing else is published for it.

Keys of the work queue are `ObjectKey("", "<cluster>.<kind>.<name>")`: the desired-state key,
so that the shared controller runner (dedupe, one worker per key, backoff) can be reused.
Deliberately not here: the IssuedCertificate state machine (`reconciler.py`).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ValidationError

from services.agent.objects import (
    DECLARATION_GENERATION,
    DECLARATION_UID,
    DESIRED_KEY,
    MANAGED_BY,
    MANAGED_BY_VALUE,
    SIGNING_CHAIN,
    AgentObjects,
    annotations_of,
    is_managed,
)
from shared.api.meta import Obj, ObjectKey, metadata
from shared.api.v1alpha2 import IssuedCertificateSpec, PodBounceDirectiveSpec
from shared.bus import Bucket, Bus, Deleted, KvEntry, Put, Snapshot
from shared.events import (
    CertificateState,
    DesiredKind,
    DesiredObject,
    InvalidName,
    StatusChanged,
    StatusChangedData,
    Undecodable,
    cluster_prefix,
    decode_value,
    desired_key,
    parse_desired_key,
)
from shared.k8s.controller import Done, ReconcileResult
from shared.k8s.errors import AlreadyExists, Invalid, NotFound
from shared.k8s.events import EventRecorder
from shared.k8s.informer import EventType, Informer, InformerEvent, version_of
from shared.k8s.resources import ISSUED_CERTIFICATES, POD_BOUNCE_DIRECTIVES, Resource
from shared.runtime.logging import get_logger

log = get_logger(__name__)

RESOURCES: Mapping[DesiredKind, Resource] = {
    DesiredKind.ISSUED_CERTIFICATE: ISSUED_CERTIFICATES,
    DesiredKind.POD_BOUNCE_DIRECTIVE: POD_BOUNCE_DIRECTIVES,
}
_SPEC_MODELS: Mapping[DesiredKind, type[BaseModel]] = {
    DesiredKind.ISSUED_CERTIFICATE: IssuedCertificateSpec,
    DesiredKind.POD_BOUNCE_DIRECTIVE: PodBounceDirectiveSpec,
}


def queue_key(key: str) -> ObjectKey:
    return ObjectKey("", key)


class DesiredState:
    """The mirror of this cluster's desired entries, and the applier (`reconcile`)."""

    def __init__(
        self,
        *,
        cluster: str,
        source: str,
        objects: AgentObjects,
        bus: Bus,
        recorder: EventRecorder,
        informers: Mapping[DesiredKind, Sequence[Informer]],
        namespaces: Sequence[str],
        enqueue: Callable[[ObjectKey], None] | None = None,
        created: Callable[[DesiredKind, Obj], None] | None = None,
    ) -> None:
        self._cluster = cluster
        self._source = source
        self._objects = objects
        self._bus = bus
        self._recorder = recorder
        self._informers = informers
        self._namespaces = frozenset(namespaces)
        self._desired: dict[str, DesiredObject] = {}
        self._unreadable: dict[str, str] = {}
        """Desired keys whose current value cannot be read, and why: never read as absent."""
        self._reported: dict[str, int] = {}
        """Desired keys refused by the cluster, and the declaration generation reported."""
        self._written: dict[str, str] = {}
        """Desired key -> resourceVersion of the object this applier last created or replaced:
        the informer's event for that very version is our own write, already matching."""
        self.enqueue: Callable[[ObjectKey], None] = enqueue or (lambda _key: None)
        self._created = created or (lambda _kind, _obj: None)
        """Told of every object this applier creates, as the API server stored it."""
        self.synced = asyncio.Event()
        """Set once the first KV snapshot is mirrored: before that, an absent entry means
        nothing (deleting on it would delete everything at every start)."""

    # -- the KV watch ------------------------------------------------------------------------

    async def watch(self, bucket: Bucket) -> None:
        """Mirror the bucket under `<cluster>.` and queue what changed; runs until cancelled."""
        async for update in bucket.watch(cluster_prefix(self._cluster)):
            if isinstance(update, Snapshot):
                before = self._desired
                keys = set(before)
                self._desired, self._unreadable = {}, {}
                for entry in update.entries.values():
                    self._put(entry, last_good=before)
                keys |= set(self._desired) | self._managed_keys()
                self.synced.set()
                log.info(
                    "desired state snapshot",
                    entries=len(self._desired),
                    unreadable=len(self._unreadable),
                )
                for key in sorted(keys):
                    self.enqueue(queue_key(key))
            elif isinstance(update, Put):
                if self._put(update.entry, last_good=self._desired):
                    self.enqueue(queue_key(update.entry.key))
            elif isinstance(update, Deleted):
                self._desired.pop(update.key, None)
                self._unreadable.pop(update.key, None)
                self._reported.pop(update.key, None)
                self.enqueue(queue_key(update.key))

    def _put(self, entry: KvEntry, *, last_good: Mapping[str, DesiredObject]) -> bool:
        """Mirror one entry; True when it is a value to apply. An entry whose value cannot be
        read (junk bytes, another schema, a value naming another object) is *not* an absent
        one: it is logged and the last good value of its key, if any, stays in the mirror;
        with none, the key's object is left as it is (`reconcile`)."""
        try:
            cluster, kind, name = parse_desired_key(entry.key)
        except InvalidName as exc:
            log.warning("desired entry ignored: not one of ours", kv_key=entry.key, error=str(exc))
            return False
        value = decode_value(DesiredObject, entry.value)
        if not isinstance(value, Undecodable) and (value.cluster, value.kind, value.name) != (
            cluster,
            kind,
            name,
        ):
            value = Undecodable("WrongObject", "the value names another object than its key")
        if isinstance(value, Undecodable):
            kept = last_good.get(entry.key)
            log.warning(
                "desired entry unreadable; ignored, last good value kept",
                kv_key=entry.key,
                revision=entry.revision,
                reason=value.reason,
                error=value.message,
                last_good_generation=kept.generation if kept is not None else None,
            )
            self._unreadable[entry.key] = str(value)
            if kept is not None:
                self._desired[entry.key] = kept
            return False
        self._unreadable.pop(entry.key, None)
        if self._desired.get(entry.key) != value:
            self._reported.pop(entry.key, None)
        self._desired[entry.key] = value
        return True

    def _managed_keys(self) -> set[str]:
        keys = set()
        for kind, informers in self._informers.items():
            for informer in informers:
                for obj in informer.items():
                    if is_managed(obj):
                        keys.add(desired_key(self._cluster, kind, ObjectKey.of(obj).name))
        return keys

    # -- drift --------------------------------------------------------------------------------

    def mapper(self, kind: DesiredKind) -> Callable[[InformerEvent], Iterable[ObjectKey]]:
        """For the informer of `kind`: the desired key to look at again after a change of a
        managed (or declared) object's spec, labels or annotations, or its deletion (drift).
        Status-only changes (the reconciler's own writes) map to nothing."""

        def map_event(event: InformerEvent) -> Iterable[ObjectKey]:
            key = desired_key(self._cluster, kind, event.key.name)
            if key not in self._desired and not is_managed(event.object):
                return []
            if event.type is EventType.DELETED:
                self._written.pop(key, None)
                return [queue_key(key)]
            written = self._written.get(key)
            if written and written == version_of(event.object):
                return []  # our own create or replace, seen back: nothing to repair
            if event.type is EventType.ADDED or event.old is None:
                return [queue_key(key)]
            if _shape(event.object) != _shape(event.old):
                return [queue_key(key)]
            return []

        return map_event

    # -- applying -----------------------------------------------------------------------------

    async def reconcile(self, qkey: ObjectKey) -> ReconcileResult:
        key = qkey.name
        if not self.synced.is_set():
            return Done()  # enqueued again by the first snapshot
        try:
            _, kind, name = parse_desired_key(key)
        except InvalidName:
            return Done()
        resource = RESOURCES[kind]
        desired = self._desired.get(key)
        cached = self._cached(kind, name)
        managed = [obj for obj in cached if is_managed(obj)]
        if desired is None and key in self._unreadable:
            # An entry is there but cannot be read, and no good value was seen before it:
            # what it declares is unknown, so nothing is created, changed or deleted.
            if managed:
                log.warning(
                    "desired entry unreadable; its object is left as it is",
                    kv_key=key,
                    error=self._unreadable[key],
                )
            return Done()
        if desired is None:
            for obj in managed:
                await self._delete(resource, obj)
            return Done()
        for obj in managed:
            if ObjectKey.of(obj).namespace != desired.namespace:
                await self._delete(resource, obj)
        if self._namespaces and desired.namespace not in self._namespaces:
            await self._refuse(
                key,
                desired,
                f"namespace {desired.namespace!r} is not watched by the agent of cluster "
                f"{self._cluster!r}",
            )
            return Done()
        here = any(ObjectKey.of(obj).namespace == desired.namespace for obj in cached)
        # Not even in the cache: create at once (a read first would almost always say absent);
        # AlreadyExists means the cache lags, and the object is read and compared after all.
        if not here and await self._create(key, resource, desired):
            return Done()
        current = await self._objects.get(resource, desired.namespace, name)
        if current is None:
            if not await self._create(key, resource, desired):
                self.enqueue(queue_key(key))  # raced with someone: look again
        elif not is_managed(current):
            log.warning("object exists and is not managed by meshtrust; left alone", kv_key=key)
            await self._recorder.record(
                current,
                type="Warning",
                reason="NotManaged",
                message="meshtrust declares an object of this name; this one is not managed by "
                "meshtrust and is left alone",
            )
        elif _differs(kind, current, desired, key):
            await self._replace(key, resource, current, desired)
        return Done()

    def _cached(self, kind: DesiredKind, name: str) -> list[Obj]:
        return [
            obj
            for informer in self._informers.get(kind, ())
            for obj in informer.items()
            if ObjectKey.of(obj).name == name
        ]

    def _metadata(self, key: str, desired: DesiredObject) -> tuple[dict[str, str], dict[str, str]]:
        labels = {MANAGED_BY: MANAGED_BY_VALUE}
        return labels, _annotations(key, desired)

    async def _create(self, key: str, resource: Resource, desired: DesiredObject) -> bool:
        """Create the object; False when one of that name exists already (nothing done)."""
        labels, annotations = self._metadata(key, desired)
        body = {
            "apiVersion": resource.api_version,
            "kind": resource.kind,
            "metadata": {
                "name": desired.name,
                "namespace": desired.namespace,
                "labels": labels,
                "annotations": annotations,
            },
            "spec": dict(desired.spec),
        }
        try:
            created = await self._objects.kube.create(resource, body)
        except AlreadyExists:
            return False
        except Invalid as exc:
            await self._refuse(key, desired, f"the cluster refused it: {exc.message}")
            return True
        if version := version_of(created):
            self._written[key] = version
        log.info("desired object created", kv_key=key, namespace=desired.namespace)
        self._created(desired.kind, created)
        return True

    async def _replace(
        self, key: str, resource: Resource, current: Obj, desired: DesiredObject
    ) -> None:
        labels, annotations = self._metadata(key, desired)
        meta = dict(metadata(current))
        meta["labels"] = {**(meta.get("labels") or {}), **labels}
        kept = {k: v for k, v in (meta.get("annotations") or {}).items() if k != SIGNING_CHAIN}
        meta["annotations"] = {**kept, **annotations}
        body = {**current, "metadata": meta, "spec": dict(desired.spec)}
        try:
            replaced = await self._objects.kube.replace(resource, body)
        except Invalid as exc:
            await self._refuse(key, desired, f"the cluster refused it: {exc.message}")
            return
        if version := version_of(replaced):
            self._written[key] = version
        log.info("desired object re-applied", kv_key=key, namespace=desired.namespace)

    async def _delete(self, resource: Resource, obj: Obj) -> None:
        meta = metadata(obj)
        try:
            await self._objects.kube.delete(
                resource,
                str(meta.get("name")),
                namespace=str(meta.get("namespace")),
                precondition_uid=meta.get("uid"),
            )
        except NotFound:
            return
        log.info("desired object deleted", object=str(ObjectKey.of(obj)), kind=resource.kind)

    async def _refuse(self, key: str, desired: DesiredObject, error: str) -> None:
        """Report a declaration this cluster cannot hold, once per declaration generation."""
        if self._reported.get(key) == desired.generation:
            return
        log.warning("desired object refused", kv_key=key, error=error)
        if desired.kind is DesiredKind.ISSUED_CERTIFICATE:
            seed = f"{desired.uid}:{desired.generation}"
            await self._bus.publish(
                StatusChanged(
                    source=self._source,
                    cluster=self._cluster,
                    issuance=hashlib.sha256(seed.encode()).hexdigest()[:32],
                    data=StatusChangedData(
                        name=desired.name,
                        namespace=desired.namespace,
                        state=CertificateState.FAILED,
                        error=error[:4096],
                        observed_generation=0,
                        declaration_generation=desired.generation,
                    ),
                )
            )
        self._reported[key] = desired.generation


def _annotations(key: str, desired: DesiredObject) -> dict[str, str]:
    """Our annotations on a desired object; the signing-chain fingerprint (IssuedCertificates
    only) tells the reconciler when the issuer's CA changed, so that it re-issues."""
    annotations = {
        DECLARATION_UID: desired.uid,
        DECLARATION_GENERATION: str(desired.generation),
        DESIRED_KEY: key,
    }
    if desired.signing_chain_fingerprint is not None:
        annotations[SIGNING_CHAIN] = desired.signing_chain_fingerprint
    return annotations


def _shape(obj: Mapping[str, Any]) -> tuple[object, ...]:
    """What the applier owns of an object: its spec, labels and annotations."""
    meta = metadata(obj)
    return (obj.get("spec"), meta.get("labels"), meta.get("annotations"))


def _differs(kind: DesiredKind, current: Obj, desired: DesiredObject, key: str) -> bool:
    labels = metadata(current).labels
    notes = annotations_of(current)
    if labels.get(MANAGED_BY) != MANAGED_BY_VALUE:
        return True
    expected = _annotations(key, desired)
    if any(notes.get(k) != v for k, v in expected.items()):
        return True
    if SIGNING_CHAIN in notes and SIGNING_CHAIN not in expected:
        return True
    # Compare through the model: the API server materialises the CRD's defaults
    # (certOptions.ttlDays...), so the stored spec is a superset of the declared one.
    model = _SPEC_MODELS[kind]
    try:
        return bool(
            model.model_validate(current.get("spec") or {}) != model.model_validate(desired.spec)
        )
    except ValidationError:
        return current.get("spec") != desired.spec
