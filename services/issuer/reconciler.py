"""Declarations -> desired state: the management cluster's objects, published per cluster.

Two level-based controllers over the informers of IssuedCertificates, PodBounceDirectives,
signing Secrets and ClusterRegistrations. `reconcile_certificate(key)` and
`reconcile_directive(key)` get a key, read the current state, decide, and write at most once:

- An IssuedCertificate `<cluster>/<name>` is published to `meshtrust-desired` under
  `<cluster>.issuedcertificates.<name>`: uid, generation, spec as declared, the namespace of its
  `issuedCertificateSecret` (where the agent applies it) and the fingerprint of its signing
  chain. A change of the signing Secret's CA changes that fingerprint, and so the value: the
  agent re-issues (docs/issuer.md). If the signing Secret is outside the signing namespaces
  (never read, then), forbidden to the issuer (403), missing or invalid, the declaration
  lies outside its cluster's ClusterRegistration (`registrations.py`), or the spec cannot be
  issued, the declaration gets FAILED with an `issuer: ...` error and nothing is
  published (a value published before stays: a broken Secret must not tear down the clusters'
  certificates); once fixed, the error is cleared (PENDING) and publishing resumes.
- A PodBounceDirective `<cluster>/<name>` is published under
  `<cluster>.podbouncedirectives.<name>` with the namespace of the `podBounceDirective` reference
  of the IssuedCertificate(s) of that cluster that name it; unreferenced, it is not published.
- A declaration that is gone has its key deleted. A sweep of the bucket at start and every
  `sweep_interval` enqueues every key's declaration, so keys of declarations deleted while no
  issuer ran go too.

Concurrency (two replicas may run): writes are compare-and-swap on the key's revision, a value
is never replaced by one of an older generation of the same object, and before any write or
delete the declaration is read again from the API, so a replica whose cache lags can neither
resurrect a deleted declaration nor roll one back.

Deliberately not here: anything about CSRs (handlers.py) or the agents' status (mirror.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Awaitable, Callable, Iterable
from concurrent.futures import Executor

from pydantic import ValidationError

from services.issuer.desired import desired_certificate, parse_entry
from services.issuer.mirror import ISSUER_ERROR_PREFIX, cleared_status, issuer_failed
from services.issuer.policies import (
    SigningState,
)
from services.issuer.registrations import Registrations
from services.issuer.rotating import Rotations
from services.issuer.settings import IssuerSettings
from services.issuer.signer import SigningCAs, read_signing_secret
from services.issuer.waves import RECHECK, ReissueWaves, is_reissue
from shared.api import reasons
from shared.api.meta import Obj, metadata
from shared.api.v1alpha2 import IssuedCertificate, IssuedCertificateStatus, State
from shared.bus import Bucket, KvEntry, RevisionMismatch
from shared.controller.policy import Finding
from shared.events import (
    DesiredKind,
    DesiredObject,
    InvalidName,
    desired_key,
    parse_desired_key,
)
from shared.k8s import (
    Controller,
    ControllerSettings,
    Done,
    EventRecorder,
    Informer,
    InformerEvent,
    KubeClient,
    NotFound,
    ObjectKey,
    RequeueAfter,
    update_model_status,
    update_status,
)
from shared.k8s.controller import ReconcileResult
from shared.k8s.early import spec_ref
from shared.k8s.informer import status_only, unless_status_only
from shared.k8s.resources import ISSUED_CERTIFICATES, POD_BOUNCE_DIRECTIVES, SECRETS, Resource
from shared.runtime import get_logger
from shared.runtime.clock import Clock, utcnow
from shared.runtime.concurrency import concurrently

log = get_logger(__name__)

_CAS_ATTEMPTS = 5


async def _live(kube: KubeClient, resource: Resource, key: ObjectKey) -> Obj | None:
    """The object as the API has it now (None if gone); other API errors propagate."""
    try:
        return await kube.get(resource, key.name, namespace=key.namespace)
    except NotFound:
        return None


def _identity(obj: Obj | None) -> tuple[str, int] | None:
    if obj is None:
        return None
    meta = metadata(obj)
    return meta.uid, meta.generation


def _ref(obj: Obj, field: str) -> tuple[str, str] | None:
    ref = (obj.get("spec") or {}).get(field)
    if not isinstance(ref, dict):
        return None
    return str(ref.get("namespace") or ""), str(ref.get("name") or "")


class Declarations:
    """The desired-state publisher: informers, two controllers, the sweep."""

    def __init__(
        self,
        *,
        settings: IssuerSettings,
        kube: KubeClient,
        desired: Bucket,
        signing_cas: SigningCAs,
        executor: Executor,
        recorder: EventRecorder,
        ensure_cluster: Callable[[str], Awaitable[None]] | None = None,
        clock: Clock = utcnow,
    ) -> None:
        self._settings = settings
        self._ensure_cluster = ensure_cluster
        """Makes a cluster's consumers before its first desired state (`shared.bus.fleet`)."""
        self._kube = kube
        self._desired = desired
        self._cas = signing_cas
        self._executor = executor
        self._recorder = recorder
        self._clock = clock
        self.certificates = Informer(kube, ISSUED_CERTIFICATES)
        self.directives = Informer(kube, POD_BOUNCE_DIRECTIVES)
        self.registrations = Registrations(kube, settings)
        # One informer per signing namespace (a Role in each suffices); unscoped, one for all.
        self.secrets = [
            Informer(kube, SECRETS, namespace=namespace)
            for namespace in settings.signing_namespaces or (None,)
        ]
        workers = ControllerSettings(workers=settings.workers)
        self.certificate_controller = Controller(
            name="issuer-certificates", reconcile=self.reconcile_certificate, settings=workers
        )
        # The desired state is a function of spec, uid, generation and the signing Secret,
        # never of status: the status mirror's writes (two per issuance) wake nothing here.
        self.certificate_controller.watch(self.certificates, map_to=unless_status_only)
        for secrets in self.secrets:
            self.certificate_controller.watch(secrets, map_to=self._certificates_signed_by)
        registered = self.registrations.declarations_of(self.certificates)
        self.certificate_controller.watch(self.registrations.informer, map_to=registered)
        self.rotations = Rotations(kube, settings)  # a step republishes with its epoch
        rotated = self.rotations.declarations_of(self.certificates)
        self.certificate_controller.watch(self.rotations.informer, map_to=rotated)
        self.waves = ReissueWaves(
            settings.reissue_wave, clock=clock
        )  # a status change frees a slot
        self.certificate_controller.watch(
            self.certificates, map_to=self.waves.mapper(self.certificates)
        )
        self.directive_controller = Controller(
            name="issuer-directives", reconcile=self.reconcile_directive, settings=workers
        )
        self.directive_controller.watch(self.directives)
        self.directive_controller.watch(self.certificates, map_to=self._directives_named_by)

    @property
    def informers(self) -> list[Informer]:
        registrations, rotations = self.registrations.informer, self.rotations.informer
        return [self.certificates, self.directives, *self.secrets, registrations, rotations]

    def synced(self) -> bool:
        return all(informer.has_synced for informer in self.informers)

    async def wait_synced(self) -> None:
        for informer in self.informers:
            await informer.wait_synced()

    # -- mapping events to keys -----------------------------------------------------------------

    def _certificates_signed_by(self, event: InformerEvent) -> Iterable[ObjectKey]:
        secret = (event.key.namespace, event.key.name)
        return [
            ObjectKey.of(obj)
            for obj in self.certificates.items()
            if _ref(obj, "signingCertificateSecret") == secret
        ]

    def _directives_named_by(self, event: InformerEvent) -> Iterable[ObjectKey]:
        if status_only(event):
            return []
        keys = set()
        for obj in (event.object, event.old):
            if obj is not None and (ref := _ref(obj, "podBounceDirective")) is not None:
                keys.add(ObjectKey(event.key.namespace, ref[1]))
        return keys

    # -- IssuedCertificates ---------------------------------------------------------------------

    async def reconcile_certificate(self, key: ObjectKey) -> ReconcileResult:
        if not self._settings.is_cluster(key.namespace):
            return Done()
        kv_key = desired_key(key.namespace, DesiredKind.ISSUED_CERTIFICATE, key.name)
        raw = self.certificates.get(key)
        if raw is None:
            return await self._remove(kv_key, key, ISSUED_CERTIFICATES)
        if self.waves.holds(key, self.certificates.items) and not self._rotating(raw, key):
            return RequeueAfter(RECHECK)
        try:
            declaration = IssuedCertificate.from_object(raw)
        except ValidationError as exc:
            fields = ", ".join(".".join(map(str, e["loc"])) for e in exc.errors()[:5])
            await self._fail_raw(key, f"the declaration cannot be read (fields: {fields})")
            return Done()
        ref = declaration.spec.signing_certificate_secret
        secret_key = ObjectKey(ref.namespace, ref.name)
        # Three independent reads at once: the signing Secret, and what `_publish` compares
        # against (the bucket's entry, and the live declaration that proves the cache current).
        secret, entry, live = await concurrently(
            read_signing_secret(self._kube, secret_key, scope=self._settings.signing_namespaces),
            self._desired.get(kv_key),
            _live(self._kube, ISSUED_CERTIFICATES, key),
        )
        signing, chain_fingerprint = await self._load_signing(secret, secret_key)
        desired = desired_certificate(
            key,
            raw,
            declaration,
            signing,
            chain_fingerprint,
            scope=self._settings.signing_namespaces,
            registration=self.registrations.state(key.namespace),
        )
        if isinstance(desired, Finding):
            return await self._refuse(declaration, desired)
        epoch = self.rotations.epoch_for(secret_key, key.namespace)
        desired = desired.model_copy(update={"trust_epoch": epoch})
        if epoch is not None:
            self.waves.forget(key)  # a rotation's step: the rotation's own waves decide
        status = raw.get("status") or {}
        existing = parse_entry(entry) if entry is not None else None
        if is_reissue(existing, desired, status) and not self.waves.admit(
            key, status, self.certificates.items()
        ):
            return RequeueAfter(RECHECK)
        if issuer_failed(declaration.status):
            await self._clear_failure(declaration)
        return await self._publish(
            kv_key, desired, key, ISSUED_CERTIFICATES, read=(entry, existing, _identity(live))
        )

    def _rotating(self, raw: Obj, key: ObjectKey) -> bool:
        """Whether a rotation's step reaches this declaration now (read from the cache, before
        anything else: a key the re-issue waves deferred must not hold a rotation up)."""
        secret = spec_ref(raw, "signingCertificateSecret")
        return secret is not None and self.rotations.epoch_for(secret, key.namespace) is not None

    async def _load_signing(
        self, secret: Obj | Finding | None, ref: ObjectKey
    ) -> tuple[SigningState, str | None]:
        """The signing CA and its chain's fingerprint (loaded in the executor: CPU-bound), or
        why it cannot sign."""
        if isinstance(secret, Finding):
            return secret, None
        return await asyncio.get_running_loop().run_in_executor(
            self._executor,
            functools.partial(
                self._cas.load, secret, namespace=ref.namespace, name=ref.name, now=self._clock()
            ),
        )

    async def _refuse(self, declaration: IssuedCertificate, verdict: Finding) -> ReconcileResult:
        """FAILED with the verdict's message; nothing is published."""
        await self._fail(declaration, verdict.message)
        if verdict.reason == reasons.SIGNING_SECRET_FORBIDDEN:
            # Granting the read makes no event that reaches us: look again, unhurried.
            return RequeueAfter(self._settings.sweep_interval)
        return Done()

    async def _fail(self, declaration: IssuedCertificate, message: str) -> None:
        error = ISSUER_ERROR_PREFIX + message
        log.warning("declaration not published", key=str(declaration.key), error=error)

        def failed(ic: IssuedCertificate) -> IssuedCertificateStatus:
            return ic.status.model_copy(
                update={
                    "state": State.FAILED,
                    "error": error,
                    "observed_generation": ic.metadata.generation or 0,
                }
            )

        await self._write_status(declaration, failed)

    async def _fail_raw(self, key: ObjectKey, message: str) -> None:
        error = ISSUER_ERROR_PREFIX + message
        log.warning("declaration not published", key=str(key), error=error)

        def failed(obj: Obj) -> Obj:
            status = dict(obj.get("status") or {})
            status.update(state=State.FAILED.value, error=error)
            return status

        with contextlib.suppress(NotFound):
            await update_status(
                self._kube, ISSUED_CERTIFICATES, key.name, namespace=key.namespace, mutate=failed
            )

    async def _clear_failure(self, declaration: IssuedCertificate) -> None:
        now = self._clock()

        def cleared(ic: IssuedCertificate) -> IssuedCertificateStatus:
            return cleared_status(ic.status, now=now)

        await self._write_status(declaration, cleared)

    async def _write_status(
        self,
        declaration: IssuedCertificate,
        mutate: Callable[[IssuedCertificate], IssuedCertificateStatus],
    ) -> None:
        """Write the declaration's status (re-read and retried on conflict); gone is fine."""
        with contextlib.suppress(NotFound):
            await update_model_status(
                self._kube,
                IssuedCertificate,
                declaration.metadata.name,
                namespace=declaration.metadata.namespace or "",
                mutate=mutate,
                current=declaration,
                recorder=self._recorder,
            )

    # -- PodBounceDirectives --------------------------------------------------------------------

    async def reconcile_directive(self, key: ObjectKey) -> ReconcileResult:
        if not self._settings.is_cluster(key.namespace):
            return Done()
        kv_key = desired_key(key.namespace, DesiredKind.POD_BOUNCE_DIRECTIVE, key.name)
        raw = self.directives.get(key)
        if raw is None:
            return await self._remove(kv_key, key, POD_BOUNCE_DIRECTIVES)
        namespaces = sorted(
            {
                ref[0]
                for obj in self.certificates.in_namespace(key.namespace)
                if (ref := _ref(obj, "podBounceDirective")) is not None and ref[1] == key.name
            }
        )
        if not namespaces:
            # No IssuedCertificate of the cluster names it: nowhere to apply it remotely.
            return await self._remove(kv_key, key, POD_BOUNCE_DIRECTIVES, live_check=False)
        if len(namespaces) > 1:
            await self._recorder.record(
                raw,
                type="Warning",
                reason=reasons.AMBIGUOUS_NAMESPACE,
                message=f"IssuedCertificates of cluster {key.namespace} name this directive in "
                f"namespaces {', '.join(namespaces)}; one directive applies in one namespace",
            )
            return Done()
        meta = metadata(raw)
        try:
            desired = DesiredObject(
                cluster=key.namespace,
                kind=DesiredKind.POD_BOUNCE_DIRECTIVE,
                name=key.name,
                namespace=namespaces[0],
                uid=meta.uid,
                generation=meta.generation,
                spec=raw.get("spec") or {},
            )
        except ValidationError:
            log.warning("directive not published: bad podBounceDirective namespace", key=str(key))
            return Done()
        return await self._publish(kv_key, desired, key, POD_BOUNCE_DIRECTIVES)

    # -- writing the bucket ---------------------------------------------------------------------

    async def _publish(
        self,
        kv_key: str,
        desired: DesiredObject,
        key: ObjectKey,
        resource: Resource,
        *,
        read: tuple[KvEntry | None, DesiredObject | None, tuple[str, int] | None] | None = None,
    ) -> ReconcileResult:
        """Create or update the bucket's entry (compare-and-swap). `read`: the entry, its parsed
        value and the live object's identity, when the caller read them already (for the first
        attempt; an unreadable entry is then parsed, and logged, once)."""
        value = desired.model_dump_json().encode()
        if self._ensure_cluster is not None:
            await self._ensure_cluster(key.namespace)
        for _ in range(_CAS_ATTEMPTS):
            if read is not None:
                (entry, existing, identity), read = read, None
            else:
                entry, identity = await concurrently(
                    self._desired.get(kv_key), self._live_identity(resource, key)
                )
                existing = parse_entry(entry) if entry is not None else None
            if entry is not None:
                if existing == desired:
                    return Done()
                if (
                    existing is not None
                    and existing.uid == desired.uid
                    and existing.generation > desired.generation
                ):
                    return Done()  # another replica saw a newer generation; our cache lags
            if identity != (desired.uid, desired.generation):
                return Done()  # the cache lags the API; its next event brings us back
            try:
                if entry is None:
                    await self._desired.create(kv_key, value)
                else:
                    await self._desired.update(kv_key, value, last=entry.revision)
            except RevisionMismatch:
                continue
            log.info(
                "desired state published",
                key=kv_key,
                generation=desired.generation,
                remote_namespace=desired.namespace,
            )
            return Done()
        return RequeueAfter(0.5)

    async def _live_identity(self, resource: Resource, key: ObjectKey) -> tuple[str, int] | None:
        return _identity(await _live(self._kube, resource, key))

    async def _remove(
        self, kv_key: str, key: ObjectKey, resource: Resource, *, live_check: bool = True
    ) -> ReconcileResult:
        if await self._desired.get(kv_key) is None:
            return Done()
        if live_check and await _live(self._kube, resource, key) is not None:
            return Done()  # the cache lags: the object is back (or never went)
        await self._desired.delete(kv_key)
        log.info("desired state deleted", key=kv_key)
        return Done()

    # -- the sweep ------------------------------------------------------------------------------

    async def sweep(self) -> None:
        """Enqueue the declaration of every key in the bucket (the reconcile deletes orphans)."""
        try:
            keys = await self._desired.keys()
        except Exception:  # the bus may be reconnecting: the next sweep tries again
            log.warning("desired-state sweep failed", exc_info=True)
            return
        for kv_key in keys:
            try:
                cluster, kind, name = parse_desired_key(kv_key)
            except InvalidName:
                continue
            controller = (
                self.certificate_controller
                if kind is DesiredKind.ISSUED_CERTIFICATE
                else self.directive_controller
            )
            controller.queue.add(ObjectKey(cluster, name))
