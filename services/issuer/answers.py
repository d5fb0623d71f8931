"""Answering a CSR: record the signature, append it to the ledger, publish the answer.

Order for a signature (docs/issuer.md, "Idempotence and the ledger"): the record stored in
`meshtrust-issued` over this replica's claim (`claims.py`) by compare-and-set, or created where
there is none -> ledger append -> publish `certificate.issued` -> note the ledger sequence in
the record. Should two replicas still have signed one issuance (a claim taken over from a
replica that was alive but late), only the one whose record is stored sends its certificate and
appends it to the ledger; the other's certificate never leaves the process (counted as
discarded). An issuance answered before is answered again from its record (same serial, no new
signature), or denied `IssuanceReused` when the record is for another CSR. An entry that cannot
be read answers nothing and is replaced by compare-and-set (`entries.py`).

Bus failures are `TransientError`s (a `PublishError` is one): the consumer naks, and the
redelivery finds the record. Deliberately not here: deciding whether to sign (`signing.py`,
`policies.py`) and signing (`signer.py`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from services.issuer.claims import Claims
from services.issuer.issued import (
    IssuanceClaim,
    IssuedRecord,
    csr_digest,
    issued_key,
    read_entry,
)
from services.issuer.ledger import LedgerEntry, record_signature
from services.issuer.metrics import IssuerMetrics
from services.issuer.settings import IssuerSettings
from shared.api import reasons
from shared.api.v1alpha2 import IssuedCertificate
from shared.bus import Bucket, Bus, KvEntry, RevisionMismatch
from shared.bus.ledger import Ledger
from shared.controller.policy import Finding
from shared.events import (
    CertificateDenied,
    CertificateDeniedData,
    CertificateIssued,
    CsrRequested,
    Undecodable,
    decode_value,
)
from shared.pki import IssuedCertificate as Signed
from shared.pki import serial_hex
from shared.runtime import TransientError, get_logger
from shared.runtime.clock import Clock, utcnow

__all__ = ["Answers", "signature_record"]

log = get_logger(__name__)

_STORE_ATTEMPTS = 5
"""Compare-and-set rounds over claims and unreadable records before giving up for now (nak)."""


@dataclass(frozen=True, kw_only=True, slots=True)
class Answers:
    """Answers `csr.requested`: certificates (recorded, ledgered) and denials."""

    settings: IssuerSettings
    bus: Bus
    issued: Bucket
    """`meshtrust-issued`: the record of every signature, by issuance."""
    ledger: Ledger
    clock: Clock = utcnow
    metrics: IssuerMetrics | None = None
    claims: Claims | None = None
    """This replica's claims: told when a record replaced one (`Claims.settle`)."""
    cross_signed: Callable[[IssuedRecord], str | None] | None = None
    """During a root rotation: the cross certificate sent with a record (docs/rotation.md)."""

    async def answered_before(self, event: CsrRequested, entry: KvEntry) -> bool:
        """If `entry` (the issuance's record) can be read, answer `event` from it: True. False
        when it holds a claim (this replica's, see `claims.py`) or cannot be read: the issuance
        is to be signed, and the entry replaced."""
        record = read_entry(entry)
        if not isinstance(record, IssuedRecord):
            return False
        await self._answer_again(event, record, entry)
        return True

    async def deliver(
        self,
        event: CsrRequested,
        declaration: IssuedCertificate,
        signed: Signed,
        *,
        corrupt: KvEntry | None = None,
    ) -> None:
        """Record, ledger and send `signed`, unless another replica's record got there first
        (then that one is the answer). `corrupt`: the entry to replace (this replica's claim,
        or an unreadable record)."""
        record = signature_record(
            event,
            declaration,
            signed,
            signed_by=self.settings.instance,
            at=self.clock().replace(microsecond=0),
        )
        key = issued_key(event.cluster, event.issuance)
        if self.metrics is not None:
            self.metrics.made(event.cluster)
        claimed = await self._store(key, record, corrupt)
        if isinstance(claimed, tuple):
            log.warning(
                "another replica signed this issuance first", discarded_serial=record.serial_number
            )
            if self.metrics is not None:
                self.metrics.signatures_discarded.labels(event.cluster).inc()
            await self._answer_again(event, *claimed)
            return
        if self.claims is not None:
            self.claims.settle(key)
        if self.metrics is not None:
            self.metrics.signed(event.cluster, requested=event.time, now=self.clock())
        sequence = await self._append_owed(record)
        log.info(
            "certificate signed",
            name=event.data.name,
            generation=event.data.declaration_generation,
            serial=record.serial_number,
            not_after=signed.not_after.isoformat(),
            signing_ca=signed.signing_ca_fingerprint[:16],
        )
        await self._publish_issued(event, record)
        await self._note_ledgered(key, record, claimed, sequence)

    async def deny(
        self,
        event: CsrRequested,
        verdict: Finding,
        declaration: IssuedCertificate | None,
        *,
        retry_after: datetime | None = None,
    ) -> None:
        """Publish `certificate.denied` (not recorded: asked again, it is decided again)."""
        log.info(
            "certificate denied", name=event.data.name, reason=verdict.reason, why=verdict.message
        )
        await self.bus.publish(
            CertificateDenied(
                **self._replying_to(event),
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
        )
        if self.metrics is not None:  # after the publish: a failed one is retried (nak)
            self.metrics.denied(event.cluster, verdict.reason)

    async def _store(
        self, key: str, record: IssuedRecord, corrupt: KvEntry | None
    ) -> int | tuple[IssuedRecord, KvEntry]:
        """Store `record` where there is no record, or only a claim or an unreadable entry
        (replaced by compare-and-set on its revision): the revision stored. When a readable
        record got there first, that record and its entry: it is the answer."""
        value = record.model_dump_json().encode()
        over, found = corrupt, None if corrupt is None else read_entry(corrupt)
        for _ in range(_STORE_ATTEMPTS):
            try:
                if over is None:
                    return await self.issued.create(key, value)
                revision = await self.issued.update(key, value, last=over.revision)
                _replaced(found, over, me=self.settings.instance)
                return revision
            except RevisionMismatch:
                existing = await self.issued.get(key)
            if existing is None:
                raise TransientError("issued record vanished while racing") from None
            found = read_entry(existing)
            if isinstance(found, IssuedRecord):
                return found, existing
            over = existing  # a claim (ours renewed, or a taker's) or junk: replace it
        raise TransientError("issued record keeps changing under compare-and-set")

    async def _append_owed(self, record: IssuedRecord) -> int | None:
        """Append the record's ledger entry if still owed; its sequence, or None if not owed.

        Owed between the record's creation and the note of its sequence (a crash there leaves
        it owed for the next copy of the request). The append is idempotent within the
        stream's duplicate window (`Nats-Msg-Id` <issuance>:<serial>): one serial, one entry.
        It precedes the answer, so every certificate sent is in the ledger. A failed append
        is a `PublishError` naming the ledger (a TransientError: nak)."""
        if record.ledger_sequence is not None or record.ledger_entry is None:
            return None
        entry = decode_value(LedgerEntry, record.ledger_entry.encode())
        if isinstance(entry, Undecodable):  # `read_entry` refuses such records: not reached
            raise TransientError(f"the record's ledger entry is unreadable: {entry}")
        return await record_signature(self.ledger, entry)

    async def _note_ledgered(
        self, key: str, record: IssuedRecord, revision: int, sequence: int | None
    ) -> None:
        """Note the ledger sequence in the record (after the answer: off the critical path)."""
        if sequence is None:
            return
        done = record.model_copy(update={"ledger_sequence": sequence})
        with contextlib.suppress(RevisionMismatch):  # someone noted it already
            await self.issued.update(key, done.model_dump_json().encode(), last=revision)

    async def _answer_again(
        self, event: CsrRequested, record: IssuedRecord, entry: KvEntry
    ) -> None:
        if not record.answers(
            cluster=event.cluster, name=event.data.name, csr_pem=event.data.csr_pem
        ):
            await self.deny(
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
        data = record.event_data(attempt=event.data.attempt)
        if self.cross_signed is not None:
            data = data.model_copy(update={"cross_signed_pem": self.cross_signed(record)})
        await self.bus.publish(CertificateIssued(**self._replying_to(event), data=data))

    def _replying_to(self, event: CsrRequested) -> dict[str, Any]:
        """The envelope of an answer to `event`: its cluster, issuance and trace; our source."""
        return {
            "source": self.settings.source,
            "cluster": event.cluster,
            "issuance": event.issuance,
            "trace": event.trace,
        }


def signature_record(
    event: CsrRequested,
    declaration: IssuedCertificate,
    signed: Signed,
    *,
    signed_by: str,
    at: datetime,
) -> IssuedRecord:
    """The `meshtrust-issued` record of a new signature, its ledger entry inside (owed)."""
    serial = serial_hex(signed.serial)
    request = event.data
    entry = LedgerEntry(
        serial_number=serial,
        cluster=event.cluster,
        namespace=event.cluster,
        name=request.name,
        declaration_uid=request.declaration_uid,
        declaration_generation=request.declaration_generation,
        issuance=event.issuance,
        hosts=declaration.spec.hosts,
        org=declaration.spec.org,
        not_before=signed.not_before,
        not_after=signed.not_after,
        csr_public_key_fingerprint=signed.public_key_fingerprint,
        certificate_fingerprint=signed.fingerprint,
        signing_ca_fingerprint=signed.signing_ca_fingerprint,
        signed_by=signed_by,
        signed_at=at,
    )
    return IssuedRecord(
        **entry.model_dump(include=set(_FROM_THE_LEDGER_ENTRY)),
        csr_sha256=csr_digest(request.csr_pem),
        certificate_pem=signed.certificate_pem.decode(),
        ca_chain_pem=signed.chain_pem[len(signed.certificate_pem) :].decode(),
        root_cert_pem=signed.root_pem.decode(),
        ledger_entry=entry.model_dump_json(),
        trust_epoch=request.trust_epoch,
    )


_FROM_THE_LEDGER_ENTRY = (
    frozenset(IssuedRecord.model_fields) & frozenset(LedgerEntry.model_fields)
) - {"schema_version"}
"""The fields a record shares with its ledger entry (serial, cluster, name, issuance, the
declaration, validity, signing CA, who signed and when): taken from the entry, so they agree."""


def _replaced(found: IssuedRecord | IssuanceClaim | None, entry: KvEntry, *, me: str) -> None:
    """Log what the stored record replaced, when it is not this replica's own claim."""
    if found is None:
        log.warning("unreadable issued record replaced", replaced_revision=entry.revision)
    elif isinstance(found, IssuanceClaim) and found.claimed_by != me:
        log.warning(
            "the claim was taken over while this replica signed; its record replaced the "
            "taker's claim (the taker will answer with it)",
            taker=found.claimed_by,
        )
