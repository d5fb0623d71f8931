"""Bus handlers: `csr.requested` (authorise, sign, answer) and `status.changed` (mirror).

Both are called by `shared.bus` consumers, which ack when the handler returns, nak on
`TransientError`, and terminate on `PermanentError` (invalid messages never get here: the codec
terminates them). Both are idempotent, as redeliveries require.

`CsrHandler`, for one request:

1. If `meshtrust-issued` has an entry for (cluster, issuance): the same question was answered
   already; send that certificate again (same serial), or deny `IssuanceReused` if the entry is
   for another CSR. No new signature. An entry that cannot be read (junk bytes, another schema)
   answers nothing: it is logged, the request is handled as if there were none, and the new
   record replaces the unreadable one by compare-and-set on its revision (losing that to a
   readable record means answering from that one).
2. Read the declaration `<cluster>/<name>` and its signing Secret *live* from the API (not from a
   cache that may lag behind a generation bump), and decide with `policies.authorise`.
3. Take a token from the cluster's issuance bucket (`quota.py`; none left: deny `RateLimited`
   with `retry_after`, not recorded). Sign in the signing executor (CPU-bound), append to the
   ledger, record the answer with create-if-absent (a replica that loses the race sends the
   winner's certificate), publish `certificate.issued`. Denials publish `certificate.denied`;
   they are not recorded, so a request denied for a missing declaration succeeds once the
   declaration exists.

Kubernetes and bus failures are transient (nak with backoff). Nothing here logs or raises
anything from the CSR but names and fingerprints.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Mapping
from concurrent.futures import Executor
from datetime import datetime, timedelta
from typing import Any

from pydantic import ValidationError

from services.issuer.issued import IssuedRecord, csr_digest, issued_key
from services.issuer.ledger import LedgerEntry, record_signature
from services.issuer.metrics import IssuerMetrics
from services.issuer.mirror import mirrored_status
from services.issuer.policies import (
    CsrInput,
    SigningState,
    authorise,
    forbidden_secret,
    scope_problem,
)
from services.issuer.quota import IssuanceQuota
from services.issuer.settings import IssuerSettings
from services.issuer.signer import SigningCAs, sign
from shared.api import reasons
from shared.api.meta import ObjectKey
from shared.api.v1alpha2 import IssuedCertificate
from shared.bus import Bucket, Bus, Delivery, KvEntry, PublishError, RevisionMismatch
from shared.bus.ledger import Ledger
from shared.controller.policy import Finding
from shared.events import (
    CertificateDenied,
    CertificateDeniedData,
    CertificateIssued,
    CsrRequested,
    Event,
    StatusChanged,
    Undecodable,
    decode_value,
)
from shared.k8s import (
    EventRecorder,
    Forbidden,
    KubeClient,
    KubeError,
    NotFound,
    update_model_status,
)
from shared.k8s.early import read_early, spec_ref
from shared.k8s.informer import Informer
from shared.k8s.resources import ISSUED_CERTIFICATES, SECRETS, Resource
from shared.pki import IssuedCertificate as Signed
from shared.pki import SigningCA, serial_hex
from shared.runtime import PermanentError, TransientError, get_logger
from shared.runtime.clock import Clock, utcnow
from shared.runtime.concurrency import InFlight, concurrently
from shared.runtime.locks import KeyedLocks

log = get_logger(__name__)


def is_cluster_namespace(namespace: str, settings: IssuerSettings) -> bool:
    return namespace not in settings.excluded_namespaces


_Secret = Mapping[str, Any] | Finding | None
"""The signing Secret as read (None: absent), or why it may not be used."""


async def _signing_secret(kube: KubeClient, ref: ObjectKey) -> _Secret:
    """The signing Secret (None: absent), or `SigningSecretForbidden` when the API server
    refuses the read (403: a person must grant it; retrying would not help)."""
    try:
        return await _get_or_none(kube, SECRETS, ref.name, ref.namespace, forbidden_ok=True)
    except Forbidden as exc:
        return forbidden_secret(ref.namespace, ref.name, exc.message)


async def _get_or_none(
    kube: KubeClient, resource: Resource, name: str, namespace: str, *, forbidden_ok: bool = False
) -> dict[str, Any] | None:
    """The object, None if absent; other errors are transient (403 raised with `forbidden_ok`;
    401, our own token not valid yet, stays transient)."""
    try:
        return await kube.get(resource, name, namespace=namespace)
    except NotFound:
        return None
    except Forbidden as exc:
        if forbidden_ok and exc.code == 403:
            raise
        raise TransientError(f"reading {resource.kind} {namespace}/{name}: {exc}") from None
    except KubeError as exc:
        raise TransientError(f"reading {resource.kind} {namespace}/{name}: {exc}") from None


MIRROR_YIELD_SECONDS = 0.05
"""The longest a status report waits for CSRs in flight: a few signatures' time.

A `csr.requested` and the `status.changed` REQUESTED the agent sends right after it arrive
together, and both run on this one event loop (and the management API server). The mirror is
bookkeeping; the CSR is the issuance's critical path. `StatusHandler` therefore waits until no
CSR is in flight (the `CsrHandler`'s `InFlight`), for at most this long: a priority, never a
stall (under a steady stream of CSRs each report waits that long, and reports are handled
`status_in_flight` at a time)."""


class _RateLimited:
    """The cluster's issuance bucket is empty: deny `RateLimited`, re-send at `at`."""

    def __init__(self, cluster: str, at: datetime, settings: IssuerSettings) -> None:
        self.at = at.replace(microsecond=0) + timedelta(seconds=1)  # rounded up, never early
        self.verdict = Finding(
            reasons.RATE_LIMITED,
            f"cluster {cluster} is over its issuance rate ({settings.issuance_burst} at once, "
            f"then {settings.issuance_per_hour:g} an hour): the CSR was not signed; send it "
            f"again at or after {self.at.isoformat()}",
        )


class _Unreadable(Exception):
    """The declaration exists but does not fit the model (say so, rather than 'no such')."""


class CsrHandler:
    """Handles `csr.requested` from every cluster (consumer `issuer`)."""

    def __init__(
        self,
        *,
        settings: IssuerSettings,
        bus: Bus,
        kube: KubeClient,
        issued: Bucket,
        ledger: Ledger,
        executor: Executor,
        signing_cas: SigningCAs,
        declarations: Informer | None = None,
        in_flight: InFlight | None = None,
        clock: Clock = utcnow,
        metrics: IssuerMetrics | None = None,
    ) -> None:
        self._settings = settings
        self._metrics = metrics
        self._in_flight = in_flight or InFlight()
        self._bus = bus
        self._kube = kube
        self._issued = issued
        self._issuances: KeyedLocks[str] = KeyedLocks()
        self._ledger = ledger
        self._executor = executor
        self._cas = signing_cas
        self._declarations = declarations
        """The issuer's IssuedCertificate informer: only to guess which Secret to read."""
        self._clock = clock
        self._policy = settings.key_policy()
        self._quota = IssuanceQuota(
            per_hour=settings.issuance_per_hour, burst=settings.issuance_burst
        )

    async def __call__(self, event: Event, delivery: Delivery) -> None:
        if not isinstance(event, CsrRequested):
            raise PermanentError("UnexpectedType", f"the issuer does not handle {event.type}")
        key = issued_key(event.cluster, event.issuance)
        # Copies of one issuance (a redelivery, the agent's re-send) handled at once in this
        # process wait for each other: the first signs, the others answer from its record.
        with self._in_flight.held():
            async with self._issuances.hold(key):
                await self._handle(event, key)

    async def _handle(self, event: CsrRequested, key: str) -> None:
        # The record (was this issuance signed already?) and the state to sign against are
        # independent reads: both at once. The state goes unused when the record is there.
        entry, state = await concurrently(self._issued.get(key), self._read_state_or_why(event))
        corrupt: KvEntry | None = None
        if entry is not None:
            record = _read_record(entry)
            if record is not None:
                await self._answer_again(event, record, entry)
                return
            corrupt = entry  # answered by nothing: sign, and replace it by compare-and-set
        if isinstance(state, KubeError):
            raise state  # the API failed us, and no record answers for it
        if isinstance(state, _Unreadable):
            await self._deny(event, Finding(reasons.INVALID_DECLARATION, str(state)), None)
            return
        declaration, secret = state
        outcome = await asyncio.get_running_loop().run_in_executor(
            self._executor,
            functools.partial(self._decide, event, declaration, secret, self._clock()),
        )
        if isinstance(outcome, _RateLimited):
            await self._deny(event, outcome.verdict, declaration, retry_after=outcome.at)
            return
        if isinstance(outcome, Finding):
            await self._deny(event, outcome, declaration)
            return
        assert declaration is not None
        await self._deliver(event, declaration, outcome, corrupt=corrupt)

    # -- gathering ----------------------------------------------------------------------------

    async def _read_state_or_why(
        self, event: CsrRequested
    ) -> tuple[IssuedCertificate | None, _Secret] | _Unreadable | KubeError:
        """The state, or why it cannot be read: returned, not raised, since the record read
        beside it decides first (a signed issuance is answered again from its record even while
        the declaration is unreadable or the API is down)."""
        try:
            return await self._read_state(event)
        except (_Unreadable, KubeError) as exc:
            return exc

    async def _read_state(self, event: CsrRequested) -> tuple[IssuedCertificate | None, _Secret]:
        cluster, name = event.cluster, event.data.name
        if not is_cluster_namespace(cluster, self._settings):
            return None, None
        # Both are read live. The Secret's name is in the declaration, but the cached
        # declaration almost always names the same one: read both at once, and read the
        # Secret again only if the live declaration names another.
        guess = self._signing_ref_cached(cluster, name)
        if guess is not None and not self._settings.signs_from(guess.namespace):
            guess = None  # a Secret outside the signing namespaces is never read
        raw, early = await concurrently(
            _get_or_none(self._kube, ISSUED_CERTIFICATES, name, cluster),
            read_early(self._kube, SECRETS, guess),
        )
        if raw is None:
            return None, None
        try:
            declaration = IssuedCertificate.from_object(raw)
        except ValidationError:
            # The CRD admitted it but our model does not: the reconciler marks it FAILED.
            raise _Unreadable(
                f"IssuedCertificate {cluster}/{name} cannot be read by the issuer; see its status"
            ) from None
        ref = declaration.spec.signing_certificate_secret
        problem = scope_problem(ref.namespace, ref.name, self._settings.signing_namespaces)
        if problem is not None:
            return declaration, problem
        if early.answers(ObjectKey(ref.namespace, ref.name)):
            return declaration, early.object
        return declaration, await _signing_secret(self._kube, ObjectKey(ref.namespace, ref.name))

    def _signing_ref_cached(self, cluster: str, name: str) -> ObjectKey | None:
        """The signing Secret the cached declaration names, if it is cached."""
        if self._declarations is None:
            return None
        return spec_ref(
            self._declarations.get(ObjectKey(cluster, name)), "signingCertificateSecret"
        )

    def _decide(
        self,
        event: CsrRequested,
        declaration: IssuedCertificate | None,
        secret: _Secret,
        now: datetime,
    ) -> Finding | _RateLimited | Signed:
        """Authorise and sign (runs in the signing executor)."""
        signing: SigningState | None = None
        if isinstance(secret, Finding):
            signing = secret
        elif declaration is not None:
            ref = declaration.spec.signing_certificate_secret
            signing, _ = self._cas.load(secret, namespace=ref.namespace, name=ref.name, now=now)
        verdict = authorise(
            CsrInput(
                cluster=event.cluster,
                request=event.data,
                declaration=declaration,
                signing=signing,
                policy=self._policy,
                signing_namespaces=self._settings.signing_namespaces,
            )
        )
        if verdict is not None:
            return verdict
        # Only a signature takes a token (an answer from the record never gets here).
        retry_at = self._quota.take(event.cluster, now)
        if retry_at is not None:
            return _RateLimited(event.cluster, retry_at, self._settings)
        # The chain allowed it, so both are there and the CA loaded.
        assert declaration is not None
        assert isinstance(signing, SigningCA)
        return sign(
            event.data.csr_pem,
            signing,
            declaration,
            max_ttl=self._settings.max_ttl,
            path_len=self._settings.path_len,
            backdate=self._settings.backdate,
            now=now,
        )

    # -- answering ----------------------------------------------------------------------------

    async def _deliver(
        self,
        event: CsrRequested,
        declaration: IssuedCertificate,
        signed: Signed,
        *,
        corrupt: KvEntry | None = None,
    ) -> None:
        now = self._clock().replace(microsecond=0)
        serial = serial_hex(signed.serial)
        record = IssuedRecord(
            cluster=event.cluster,
            name=event.data.name,
            issuance=event.issuance,
            declaration_uid=event.data.declaration_uid,
            declaration_generation=event.data.declaration_generation,
            csr_sha256=csr_digest(event.data.csr_pem),
            serial_number=serial,
            certificate_pem=signed.certificate_pem.decode(),
            ca_chain_pem=signed.chain_pem[len(signed.certificate_pem) :].decode(),
            root_cert_pem=signed.root_pem.decode(),
            not_before=signed.not_before,
            not_after=signed.not_after,
            signing_ca_fingerprint=signed.signing_ca_fingerprint,
            signed_by=self._settings.instance,
            signed_at=now,
        )
        entry = LedgerEntry(
            serial_number=serial,
            cluster=event.cluster,
            namespace=event.cluster,
            name=event.data.name,
            declaration_uid=event.data.declaration_uid,
            declaration_generation=event.data.declaration_generation,
            issuance=event.issuance,
            hosts=declaration.spec.hosts,
            org=declaration.spec.org,
            not_before=signed.not_before,
            not_after=signed.not_after,
            csr_public_key_fingerprint=signed.public_key_fingerprint,
            certificate_fingerprint=signed.fingerprint,
            signing_ca_fingerprint=signed.signing_ca_fingerprint,
            signed_by=self._settings.instance,
            signed_at=now,
        )
        record = record.model_copy(update={"ledger_entry": entry.model_dump_json()})
        key = issued_key(event.cluster, event.issuance)
        # The record claims the issuance: of two replicas signing it at once, only the one whose
        # record is stored sends its certificate and appends it to the ledger; the other's
        # certificate never leaves the process.
        claimed = await self._claim(key, record, corrupt)
        if isinstance(claimed, tuple):
            log.info("another replica signed this issuance first", discarded_serial=serial)
            await self._answer_again(event, *claimed)
            return
        revision = claimed
        if self._metrics is not None:
            self._metrics.signed(event.cluster, requested=event.time, now=self._clock())
        sequence = await self._append_owed(record)
        log.info(
            "certificate signed",
            name=event.data.name,
            generation=event.data.declaration_generation,
            serial=serial,
            not_after=signed.not_after.isoformat(),
            signing_ca=signed.signing_ca_fingerprint[:16],
        )
        await self._publish_issued(event, record)
        await self._note_ledgered(key, record, revision, sequence)

    async def _claim(
        self, key: str, record: IssuedRecord, corrupt: KvEntry | None
    ) -> int | tuple[IssuedRecord, KvEntry]:
        """Store `record` where there is no record, or only an unreadable one (replaced by
        compare-and-set on its revision): the revision stored. When a readable record got
        there first, that record and its entry: it is the answer."""
        value = record.model_dump_json().encode()
        over = corrupt
        for _ in range(_CLAIM_ATTEMPTS):
            try:
                if over is None:
                    return await self._issued.create(key, value)
                revision = await self._issued.update(key, value, last=over.revision)
                log.warning("unreadable issued record replaced", replaced_revision=over.revision)
                return revision
            except RevisionMismatch:
                existing = await self._issued.get(key)
            if existing is None:
                raise TransientError("issued record vanished while racing") from None
            winner = _read_record(existing)
            if winner is not None:
                return winner, existing
            over = existing
        raise TransientError("issued record keeps changing under compare-and-set")

    async def _append_owed(self, record: IssuedRecord) -> int | None:
        """Append the record's ledger entry if still owed; its sequence, or None if not owed.

        Owed between the record's creation and the note of its sequence (a crash there leaves
        it owed for the next copy of the request). The append is idempotent within the
        stream's duplicate window (`Nats-Msg-Id` <issuance>:<serial>): one serial, one entry.
        It precedes the answer, so every certificate sent is in the ledger."""
        if record.ledger_sequence is not None or record.ledger_entry is None:
            return None
        entry = decode_value(LedgerEntry, record.ledger_entry.encode())
        if isinstance(entry, Undecodable):  # `_read_record` refuses such records: not reached
            raise TransientError(f"the record's ledger entry is unreadable: {entry}")
        try:
            return await record_signature(self._ledger, entry)
        except PublishError as exc:
            raise TransientError(f"ledger append failed: {exc}") from None

    async def _note_ledgered(
        self, key: str, record: IssuedRecord, revision: int, sequence: int | None
    ) -> None:
        """Note the ledger sequence in the record (after the answer: off the critical path)."""
        if sequence is None:
            return
        done = record.model_copy(update={"ledger_sequence": sequence})
        with contextlib.suppress(RevisionMismatch):  # someone noted it already
            await self._issued.update(key, done.model_dump_json().encode(), last=revision)

    async def _answer_again(
        self, event: CsrRequested, record: IssuedRecord, entry: KvEntry
    ) -> None:
        if not record.answers(
            cluster=event.cluster, name=event.data.name, csr_pem=event.data.csr_pem
        ):
            await self._deny(
                event,
                Finding(
                    reasons.ISSUANCE_REUSED,
                    f"issuance {event.issuance} was already answered for another CSR; a new key "
                    "needs a new issuance id",
                ),
                None,
            )
            return
        sequence = await self._append_owed(record)
        log.info(
            "issuance answered before; sending the same certificate", serial=record.serial_number
        )
        await self._publish_issued(event, record)
        await self._note_ledgered(entry.key, record, entry.revision, sequence)

    async def _publish_issued(self, event: CsrRequested, record: IssuedRecord) -> None:
        answer = CertificateIssued(
            source=self._settings.source,
            cluster=event.cluster,
            issuance=event.issuance,
            trace=event.trace,
            data=record.event_data(attempt=event.data.attempt),
        )
        try:
            await self._bus.publish(answer)
        except PublishError as exc:
            raise TransientError(str(exc)) from None

    async def _deny(
        self,
        event: CsrRequested,
        verdict: Finding,
        declaration: IssuedCertificate | None,
        *,
        retry_after: datetime | None = None,
    ) -> None:
        log.info(
            "certificate denied", name=event.data.name, reason=verdict.reason, why=verdict.message
        )
        answer = CertificateDenied(
            source=self._settings.source,
            cluster=event.cluster,
            issuance=event.issuance,
            trace=event.trace,
            data=CertificateDeniedData(
                name=event.data.name,
                declaration_generation=(
                    declaration.metadata.generation if declaration is not None else None
                ),
                attempt=event.data.attempt,
                reason=verdict.reason,
                message=verdict.message[:4096],
                retry_after=retry_after,
            ),
        )
        try:
            await self._bus.publish(answer)
        except PublishError as exc:
            raise TransientError(str(exc)) from None
        if self._metrics is not None:  # after the publish: a failed one is retried (nak)
            self._metrics.denied(event.cluster, verdict.reason)


_CLAIM_ATTEMPTS = 5
"""Compare-and-set rounds over unreadable records before giving up for now (nak)."""


def _read_record(entry: KvEntry) -> IssuedRecord | None:
    """The record in `entry`, or None (logged) when it cannot be read: junk bytes, another
    schema, or a ledger entry inside it that cannot be read. Such a record answers nothing;
    the issuance is signed again and the record replaced by compare-and-set."""
    record = decode_value(IssuedRecord, entry.value)
    if not isinstance(record, Undecodable) and record.ledger_entry is not None:
        inner = decode_value(LedgerEntry, record.ledger_entry.encode())
        if isinstance(inner, Undecodable):
            record = Undecodable(inner.reason, f"its ledger entry: {inner.message}")
    if isinstance(record, Undecodable):
        log.warning(
            "issued record unreadable; treated as absent and replaced",
            key=entry.key,
            revision=entry.revision,
            reason=record.reason,
            error=record.message,
        )
        return None
    return record


class StatusHandler:
    """Mirrors `status.changed` onto the management IssuedCertificate (consumer
    `issuer-status`); acks only after the status write succeeded."""

    def __init__(
        self,
        *,
        settings: IssuerSettings,
        kube: KubeClient,
        recorder: EventRecorder,
        declarations: Informer | None = None,
        in_flight: InFlight | None = None,
    ) -> None:
        self._settings = settings
        self._kube = kube
        self._recorder = recorder
        self._declarations = declarations
        self._in_flight = in_flight
        """The CsrHandler's count: a report waits (briefly) for CSRs being signed."""
        """The issuer's IssuedCertificate informer: its copy saves the read before the write
        (the write carries its resourceVersion: a stale copy is a 409, then read fresh)."""

    async def __call__(self, event: Event, delivery: Delivery) -> None:
        if not isinstance(event, StatusChanged):
            raise PermanentError(
                "UnexpectedType", f"the status mirror does not handle {event.type}"
            )
        if self._in_flight is not None:
            await self._in_flight.none_within(MIRROR_YIELD_SECONDS)
        cluster, change = event.cluster, event.data
        if not is_cluster_namespace(cluster, self._settings):
            log.info("status of an unregistered cluster ignored", name=change.name)
            return
        try:
            _, write = await update_model_status(
                self._kube,
                IssuedCertificate,
                change.name,
                namespace=cluster,
                mutate=lambda ic: mirrored_status(ic.status, change, issuance=event.issuance),
                current=self._cached(cluster, change.name),
                recorder=self._recorder,
            )
        except NotFound:
            log.info("status for a declaration that is gone; nothing to mirror", name=change.name)
            return
        except ValidationError:
            log.warning("declaration unreadable; status not mirrored", name=change.name)
            return
        except KubeError as exc:
            raise TransientError(f"mirroring status of {cluster}/{change.name}: {exc}") from None
        if write.changed:
            log.info("status mirrored", name=change.name, state=change.state.value)

    def _cached(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        if self._declarations is None:
            return None
        return self._declarations.get(ObjectKey(namespace, name))
