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

What to do is decided by the pure `desired_plan` (`plan` from the mirror and the cache,
`converge` on a fresh read); this module keeps the mirror and executes those actions.

An entry that the cluster refuses (422: e.g. no `issuedCertificateSecret`, empty `hosts`) cannot
exist here, so it cannot go FAILED here either: once per declaration generation it is handed to
`refused` (the reconciler's `report_refused`, which publishes `status.changed` FAILED naming the
fields the API server named; the issuer mirrors it onto the declaration). Nothing is published
from here: only the reconciler publishes status.

Keys of the work queue are `ObjectKey("", "<cluster>.<kind>.<name>")`: the desired-state key,
so that the shared controller runner (dedupe, one worker per key, backoff) can be reused.
Deliberately not here: the IssuedCertificate state machine (`reconciler.py`), deciding
(`desired_plan.py`), publishing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence

from services.agent import desired_plan as plans
from services.agent.desired_plan import RESOURCES
from services.agent.objects import AgentObjects, is_managed
from shared.api.meta import Obj, ObjectKey, metadata
from shared.api.reasons import NOT_MANAGED, WRONG_OBJECT
from shared.bus import Bucket, Deleted, KvEntry, Put, Snapshot
from shared.events import (
    DesiredKind,
    DesiredObject,
    InvalidName,
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
from shared.k8s.resources import Resource
from shared.runtime.logging import get_logger

log = get_logger(__name__)


async def _no_report(_desired: DesiredObject, _error: str) -> None:
    return None


def queue_key(key: str) -> ObjectKey:
    return ObjectKey("", key)


class DesiredState:
    """The mirror of this cluster's desired entries, and the applier (`reconcile`)."""

    def __init__(
        self,
        *,
        cluster: str,
        objects: AgentObjects,
        recorder: EventRecorder,
        informers: Mapping[DesiredKind, Sequence[Informer]],
        namespaces: Sequence[str],
        enqueue: Callable[[ObjectKey], None] | None = None,
        created: Callable[[DesiredKind, Obj], None] | None = None,
        refused: Callable[[DesiredObject, str], Awaitable[None]] = _no_report,
    ) -> None:
        self._cluster = cluster
        self._objects = objects
        self._refused = refused
        """Told of a declaration this cluster cannot hold, once per declaration generation."""
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

    async def watch(self, bucket: Bucket, *, poll: float = 1.0) -> None:
        """Mirror the bucket under `<cluster>.` and queue what changed; runs until cancelled.
        `poll`: how long one pull for changes waits (`Bucket.watch`)."""
        async for update in bucket.watch(cluster_prefix(self._cluster), poll=poll):
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
            value = Undecodable(WRONG_OBJECT, "the value names another object than its key")
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
            if plans.shape(event.object) != plans.shape(event.old):
                return [queue_key(key)]
            return []

        return map_event

    # -- applying: the plan's actions, executed -----------------------------------------------

    async def reconcile(self, qkey: ObjectKey) -> ReconcileResult:
        key = qkey.name
        if not self.synced.is_set():
            return Done()  # enqueued again by the first snapshot
        try:
            _, kind, name = parse_desired_key(key)
        except InvalidName:
            return Done()
        actions = plans.plan(
            desired=self._desired.get(key),
            unreadable=self._unreadable.get(key),
            cached=self._cached(kind, name),
            namespaces=self._namespaces,
            cluster=self._cluster,
        )
        for action in actions:
            await self._do(key, kind, action)
        return Done()

    async def _do(self, key: str, kind: DesiredKind, action: plans.Action) -> None:
        match action:
            case plans.KeepUnreadable():
                log.warning(
                    "desired entry unreadable; its object is left as it is",
                    kv_key=key,
                    error=action.error,
                )
            case plans.Delete():
                await self._delete(RESOURCES[kind], action.obj)
            case plans.Refuse():
                await self._refuse(key, action.desired, action.error)
            case plans.Create():
                await self._create(key, action)
            case plans.Compare():
                await self._compare(key, action.desired)
            case plans.Replace():
                await self._replace(key, action)
            case plans.LeaveAlone():
                await self._leave_alone(key, action.current)

    def _cached(self, kind: DesiredKind, name: str) -> list[Obj]:
        return [
            obj
            for informer in self._informers.get(kind, ())
            for obj in informer.items()
            if ObjectKey.of(obj).name == name
        ]

    async def _compare(self, key: str, desired: DesiredObject) -> None:
        resource = RESOURCES[desired.kind]
        current = await self._objects.get(resource, desired.namespace, desired.name)
        for action in plans.converge(key, desired, current):
            await self._do(key, desired.kind, action)

    async def _create(self, key: str, action: plans.Create) -> None:
        """Create the object. One of that name exists already: sent without a read first,
        the cache lags and it is compared; otherwise someone raced us, and the key is looked
        at again."""
        desired = action.desired
        try:
            created = await self._objects.kube.create(
                RESOURCES[desired.kind], plans.create_body(key, desired)
            )
        except AlreadyExists:
            if action.first:
                await self._compare(key, desired)
            else:
                self.enqueue(queue_key(key))
            return
        except Invalid as exc:
            await self._refuse(key, desired, f"the cluster refused it: {exc.message}")
            return
        if version := version_of(created):
            self._written[key] = version
        log.info("desired object created", kv_key=key, namespace=desired.namespace)
        self._created(desired.kind, created)

    async def _replace(self, key: str, action: plans.Replace) -> None:
        desired = action.desired
        body = plans.replace_body(key, action.current, desired)
        try:
            replaced = await self._objects.kube.replace(RESOURCES[desired.kind], body)
        except Invalid as exc:
            await self._refuse(key, desired, f"the cluster refused it: {exc.message}")
            return
        if version := version_of(replaced):
            self._written[key] = version
        log.info("desired object re-applied", kv_key=key, namespace=desired.namespace)

    async def _leave_alone(self, key: str, current: Obj) -> None:
        log.warning("object exists and is not managed by meshtrust; left alone", kv_key=key)
        await self._recorder.record(
            current,
            type="Warning",
            reason=NOT_MANAGED,
            message="meshtrust declares an object of this name; this one is not managed by "
            "meshtrust and is left alone",
        )

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
        await self._refused(desired, error)
        self._reported[key] = desired.generation
