"""The rotation controller: CertificateRotations watched, planned, applied (docs/rotation.md).

`Rotations` caches the CertificateRotations of the registration namespace and answers the two
questions the rest of the issuer asks: on which step is a cluster whose declaration names a
Secret (`covering`; the desired state carries its epoch, the CSR path signs for it), and which
cross certificate goes with an answer (`cross_signed`). `RotationController` reconciles one
rotation: it reads both CAs live, sees each cluster's progress (its declarations' mirrored
status, and the `meshtrust-issued` record of the issuance that status names: signed for the
step's epoch, with that serial), asks the pure plan (`rotation.py`) and writes the status. A
step set in the status reaches the clusters through the declarations' controller, which watches
the rotations and republishes the declarations with the step's trust epoch.

The cross certificate is made once per rotation and replica (by uid) and kept in memory: two
replicas may make two, each valid (the agents check any against their pinned roots).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import functools
import threading
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Executor
from datetime import datetime
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from pydantic import ValidationError

from services.issuer.issued import IssuedRecord, issued_key
from services.issuer.registrations import Registrations
from services.issuer.rotation import (
    ENDED,
    ClusterView,
    new_ca_refused,
    plan,
    signing_step,
    trust_split,
)
from services.issuer.settings import IssuerSettings
from services.issuer.signer import SigningCAs, read_signing_secret
from services.issuer.steps import cross_certificate
from shared.api import v1alpha2
from shared.api.meta import Obj, ObjectKey
from shared.api.rotations import CertificateRotation, Step, epoch_of, parse_epoch
from shared.api.selectors import matches
from shared.api.v1alpha2 import IssuedCertificate, State
from shared.bus import Bucket
from shared.controller.policy import Finding
from shared.events import Undecodable, decode_value
from shared.k8s import Informer, InformerEvent, KubeClient
from shared.k8s.controller import Controller, Done, ReconcileResult, RequeueAfter
from shared.k8s.resources import Resource
from shared.pki import SigningCA, fingerprint
from shared.runtime import get_logger
from shared.runtime.clock import Clock, utcnow

__all__ = ["CERTIFICATE_ROTATIONS", "RotationController", "Rotations", "decoded_secret_data"]

log = get_logger(__name__)

CERTIFICATE_ROTATIONS = Resource(
    v1alpha2.GROUP, v1alpha2.VERSION, CertificateRotation.PLURAL, CertificateRotation.KIND
)
_RETRY_SECONDS = 30.0
"""How soon a rotation whose CAs cannot be used is looked at again."""


class Rotations:
    """The cached CertificateRotations and the cross certificates made for them."""

    def __init__(self, kube: KubeClient, settings: IssuerSettings) -> None:
        self.namespace = settings.registration_namespace
        self.informer = Informer(kube, CERTIFICATE_ROTATIONS, namespace=self.namespace)
        self._cross: dict[str, x509.Certificate] = {}
        self._lock = threading.Lock()

    def all(self) -> list[CertificateRotation]:
        out = []
        for raw in self.informer.items():
            try:
                out.append(CertificateRotation.from_object(raw))
            except ValidationError:
                continue  # its controller says so in its status
        return out

    def covering(self, secret: ObjectKey, cluster: str) -> tuple[CertificateRotation, Step] | None:
        """The rotation of `secret` and the step it signs `cluster` for, if any: one still under
        way first, else the newest ended one (Succeeded, RolledBack) that has a step for it."""
        ordered = sorted(
            self.all(),
            key=lambda r: (r.status.phase in ENDED, -_created(r), r.metadata.name),
        )
        for rotation in ordered:
            ref = rotation.spec.signing_certificate_secret
            if (ref.namespace, ref.name) != (secret.namespace, secret.name):
                continue
            step = signing_step(rotation, cluster)
            if step is not None:
                return rotation, step
        return None

    def epoch_for(self, secret: ObjectKey, cluster: str) -> str | None:
        """The trust epoch the desired declarations of `cluster` naming `secret` carry."""
        covered = self.covering(secret, cluster)
        if covered is None:
            return None
        rotation, step = covered
        return epoch_of(rotation.metadata.name, rotation.metadata.uid or "", step)

    def declarations_of(
        self, declarations: Informer
    ) -> Callable[[InformerEvent], Iterable[ObjectKey]]:
        """The map from a rotation's event to the declarations naming its Secret (their epoch
        may have changed)."""

        def keys(event: InformerEvent) -> Iterable[ObjectKey]:
            spec = event.object.get("spec") or {}
            ref = spec.get("signingCertificateSecret") or {}
            return [
                ObjectKey.of(obj)
                for obj in declarations.items()
                if (obj.get("spec") or {}).get("signingCertificateSecret") == ref
            ]

        return keys

    def cross_for(
        self,
        rotation: CertificateRotation,
        old: SigningCA,
        new: SigningCA,
        new_data: Mapping[str, bytes],
        *,
        now: datetime,
    ) -> x509.Certificate | Finding:
        """The rotation's cross certificate, made (or read) once (thread-safe)."""
        uid = rotation.metadata.uid or rotation.metadata.name
        with self._lock:
            hit = self._cross.get(uid)
        if hit is not None and hit.subject == new.root.subject:
            return hit
        made = cross_certificate(old, new, new_data, now=now)
        if isinstance(made, x509.Certificate):
            with self._lock:
                self._cross[uid] = made
        return made

    def cross_signed(self, record: IssuedRecord) -> str | None:
        """The cross certificate for a root of the record's root-cert.pem, if one was made."""
        with self._lock:
            made = dict(self._cross)
        # Only the cross certificate of the rotation the record was signed for: an earlier
        # rotation's cross certificate vouches for the current (old) root, not for the new one.
        epoch = parse_epoch(record.trust_epoch) if record.trust_epoch else None
        if epoch is not None:
            made = {uid: c for uid, c in made.items() if uid.replace("-", "").startswith(epoch[1])}
        crosses = list(made.values())
        if not crosses:
            return None
        roots = x509.load_pem_x509_certificates(record.root_cert_pem.encode())
        for cross in crosses:
            for root in roots:
                if root.subject == cross.subject and root.public_key() == cross.public_key():
                    return cross.public_bytes(serialization.Encoding.PEM).decode()
        return None


class RotationController:
    """Reconciles each CertificateRotation: plan, then write the status (the steps in it)."""

    def __init__(
        self,
        *,
        settings: IssuerSettings,
        kube: KubeClient,
        rotations: Rotations,
        declarations: Informer,
        registrations: Registrations,
        issued: Bucket,
        cas: SigningCAs,
        executor: Executor,
        clock: Clock = utcnow,
    ) -> None:
        self._settings = settings
        self._kube = kube
        self.rotations = rotations
        self._declarations = declarations
        self._registrations = registrations
        self._issued = issued
        self._cas = cas
        self._executor = executor
        self._clock = clock
        self.controller = Controller(name="issuer-rotations", reconcile=self.reconcile)
        self.controller.watch(rotations.informer)
        self.controller.watch(declarations, map_to=self._rotations_of)
        self.controller.watch(registrations.informer, map_to=self._registered)

    def _rotations_of(self, event: InformerEvent) -> Iterable[ObjectKey]:
        """A declaration's change (its mirrored status) wakes the rotations of its Secret."""
        spec = event.object.get("spec") or {}
        ref = spec.get("signingCertificateSecret") or {}
        return [
            ObjectKey(self.rotations.namespace, r.metadata.name)
            for r in self.rotations.all()
            if (r.spec.signing_certificate_secret.namespace, r.spec.signing_certificate_secret.name)
            == (ref.get("namespace"), ref.get("name"))
        ]

    def _registered(self, event: InformerEvent) -> Iterable[ObjectKey]:
        """A ClusterRegistration's change (its labels, the CAs it allows) wakes every rotation
        still under way."""
        del event
        return [
            ObjectKey(self.rotations.namespace, r.metadata.name)
            for r in self.rotations.all()
            if r.status.phase not in ENDED
        ]

    async def reconcile(self, key: ObjectKey) -> ReconcileResult:
        raw = self.rotations.informer.get(key)
        if raw is None:
            return Done()
        try:
            rotation = CertificateRotation.from_object(raw)
        except ValidationError as exc:
            log.warning("rotation unreadable", key=str(key), error=str(exc.errors()[:3]))
            return Done()
        loaded = await self._load(rotation)
        if isinstance(loaded, Finding):
            return await self._pause(raw, rotation, loaded)
        old, new = loaded
        now = self._clock()
        naming = self._naming(rotation)
        views = await self._views(rotation, naming)
        held = trust_split(rotation, naming, views, intermediate_only=old.root == new.root)
        held = held or new_ca_refused(rotation, {c: self._registrations.state(c) for c in views})
        if held is not None:
            return await self._pause(raw, rotation, held)
        outcome = plan(
            rotation,
            views,
            intermediate_only=old.root == new.root,
            now=now,
            step_timeout=self._settings.rotation_step_timeout,
        )
        status = outcome.status.model_copy(
            update={
                "old_root_fingerprint": fingerprint(old.root),
                "new_root_fingerprint": fingerprint(new.root),
            }
        )
        if outcome.moves:
            log.info("rotation moves clusters", rotation=key.name, moves=dict(outcome.moves))
        await self._write(raw, rotation, status.model_dump(mode="json", by_alias=True))
        if outcome.requeue_at is None:
            return Done()
        return RequeueAfter(max(0.1, (outcome.requeue_at - now).total_seconds()))

    async def _pause(
        self, raw: Obj, rotation: CertificateRotation, why: Finding
    ) -> ReconcileResult:
        """Paused with `why` in status.error, nothing else changed; looked at again later."""
        status = rotation.status.model_copy(
            update={
                "paused": True,
                "error": f"{why.reason}: {why.message}",
                "observed_generation": rotation.metadata.generation or 0,
            }
        )
        await self._write(raw, rotation, status.model_dump(mode="json", by_alias=True))
        return RequeueAfter(_RETRY_SECONDS)

    async def _load(self, rotation: CertificateRotation) -> tuple[SigningCA, SigningCA] | Finding:
        """Both CAs, read live; and the cross certificate made once (it needs both)."""
        now = self._clock()
        cas: list[SigningCA] = []
        datas: list[Mapping[str, bytes]] = []
        for ref in (
            rotation.spec.signing_certificate_secret,
            rotation.spec.new_signing_certificate_secret,
        ):
            secret = await read_signing_secret(
                self._kube,
                ObjectKey(ref.namespace, ref.name),
                scope=self._settings.signing_namespaces,
            )
            if isinstance(secret, Finding):
                return secret
            load = functools.partial(
                self._cas.load, secret, namespace=ref.namespace, name=ref.name, now=now
            )
            ca, _ = await asyncio.get_running_loop().run_in_executor(self._executor, load)
            if isinstance(ca, Finding):
                return ca
            cas.append(ca)
            datas.append(decoded_secret_data(secret))
        old, new = cas
        if old.root != new.root:
            cross = self.rotations.cross_for(rotation, old, new, datas[1], now=now)
            if isinstance(cross, Finding):
                return cross
        return old, new

    def _naming(self, rotation: CertificateRotation) -> dict[str, list[IssuedCertificate]]:
        """Every cluster with a declaration naming the rotated Secret, and those declarations."""
        ref = rotation.spec.signing_certificate_secret
        out: dict[str, list[IssuedCertificate]] = {}
        for raw in self._declarations.items():
            try:
                declaration = IssuedCertificate.from_object(raw)
            except ValidationError:
                continue
            named = declaration.spec.signing_certificate_secret
            if (named.namespace, named.name) == (ref.namespace, ref.name):
                cluster = declaration.metadata.namespace or ""
                out.setdefault(cluster, []).append(declaration)
        return out

    async def _views(
        self, rotation: CertificateRotation, naming: Mapping[str, list[IssuedCertificate]]
    ) -> dict[str, ClusterView]:
        """Every cluster the rotation covers, and what is seen of it on its step."""
        member = self._members(rotation)
        # A listed cluster without a declaration is seen too: its view says none names the Secret.
        by_cluster: dict[str, list[IssuedCertificate]] = {
            c: [] for c in rotation.spec.clusters if member(c)
        }
        by_cluster |= {c: d for c, d in naming.items() if member(c)}
        steps = {p.name: p.step for p in rotation.status.clusters}
        out = {}
        for cluster, declarations in by_cluster.items():
            step = steps.get(cluster)
            out[cluster] = await self._view(rotation, cluster, step, declarations)
        return out

    def _members(self, rotation: CertificateRotation) -> Callable[[str], bool]:
        """Whether the rotation takes a cluster: named by `spec.clusters` (when set) and whose
        ClusterRegistration's labels `spec.clusterSelector` matches (when set), or already moved
        to a step. Membership is sticky: dropping a moved cluster (an edited list, a label
        changed) would drop its epoch, and it would re-issue outside the plan's waves."""
        spec = rotation.spec
        moved = {p.name for p in rotation.status.clusters if p.step is not None}

        def member(cluster: str) -> bool:
            if cluster in moved:
                return True
            if spec.clusters and cluster not in spec.clusters:
                return False
            if spec.cluster_selector is None:
                return True
            key = ObjectKey(self.rotations.namespace, cluster)
            registration = self._registrations.informer.get(key)
            if registration is None:
                return False  # no registration, no labels (the permissive mode)
            labels = (registration.get("metadata") or {}).get("labels") or {}
            return matches(spec.cluster_selector, labels)

        return member

    async def _view(
        self,
        rotation: CertificateRotation,
        cluster: str,
        step: Step | None,
        declarations: list[IssuedCertificate],
    ) -> ClusterView:
        if not declarations:
            return ClusterView(failed=f"no declaration in {cluster} names the rotated Secret")
        if step is None:
            return ClusterView()
        epoch = epoch_of(rotation.metadata.name, rotation.metadata.uid or "", step)
        serials = []
        for declaration in declarations:
            status = declaration.status
            name = declaration.metadata.name
            if status.state is State.FAILED:
                return ClusterView(failed=f"{name}: {status.error}")
            record = await self._record(cluster, status.issuance_id)
            signed_for_step = (
                status.state is State.FINISHED
                and record is not None
                and record.trust_epoch == epoch
                and record.serial_number == status.serial_number
            )
            if not signed_for_step:
                return ClusterView()
            serials.append(status.serial_number or "")
        return ClusterView(done=True, serial=",".join(serials))

    async def _record(self, cluster: str, issuance: str | None) -> IssuedRecord | None:
        if not issuance:
            return None
        entry = await self._issued.get(issued_key(cluster, issuance))
        if entry is None:
            return None
        record = decode_value(IssuedRecord, entry.value)
        return None if isinstance(record, Undecodable) else record

    async def _write(self, raw: Obj, rotation: CertificateRotation, status: dict[str, Any]) -> None:
        """PUT /status with the resourceVersion read (a conflict retries the reconcile)."""
        if status == rotation.status.model_dump(mode="json", by_alias=True):
            return
        body = {**raw, "status": _without_none(status)}
        await self._kube.replace_status(CERTIFICATE_ROTATIONS, body)


def _created(rotation: CertificateRotation) -> float:
    """The rotation's creation time (Unix seconds; 0 when unknown)."""
    stamp = rotation.metadata.creation_timestamp
    return stamp.timestamp() if stamp is not None else 0.0


def _without_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_none(v) for v in value]
    return value


def decoded_secret_data(secret: Mapping[str, Any] | None) -> dict[str, bytes]:
    """A Secret's data, decoded (a field that is not base64 left out)."""
    data = (secret or {}).get("data") or {}
    out = {}
    for field, value in data.items():
        try:
            out[str(field)] = base64.b64decode(str(value), validate=True)
        except (binascii.Error, ValueError):
            continue
    return out
