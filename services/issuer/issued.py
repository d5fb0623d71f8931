"""What the issuer signed, by issuance: the KV bucket `meshtrust-issued`.

One entry per issuance (`<cluster>.<issuance id>`), written once with create-if-absent; updated
only by compare-and-set: to note its ledger sequence, or to replace an entry that cannot be read
(which answers nothing, so the issuance is signed again). A CSR asked again (a redelivery, an
agent's re-send after a timeout, another replica racing for the same issuance) finds the entry and
gets the same certificate back instead of a new serial. The entry also remembers which CSR it
answered (SHA-256 of the PEM), so an issuance id reused for a different CSR is refused rather than
answered with someone else's certificate.

Before a replica signs, the entry holds its claim on the issuance (`IssuanceClaim`: who and
until when; `claims.py`), so that replicas make one signature per issuance: the record of the
signature replaces the claim by compare-and-set, a denial deletes it.

Only public data is stored: certificates and fingerprints, never a key.
Deliberately not here: expiry of old entries (they are small; a later sweep may drop entries
whose certificate has expired).
"""

from __future__ import annotations

import hashlib
from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict

from services.issuer.entries import readable
from services.issuer.ledger import LedgerEntry
from shared.bus import KvEntry
from shared.events import CertificateIssuedData, Undecodable, decode_value

ISSUED_BUCKET = "meshtrust-issued"
ISSUED_DESCRIPTION = "every certificate the issuer signed, by issuance, for idempotent answers"


def issued_key(cluster: str, issuance: str) -> str:
    return f"{cluster}.{issuance}"


def csr_digest(csr_pem: str) -> str:
    return hashlib.sha256(csr_pem.encode()).hexdigest()


class IssuedRecord(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: Literal[1] = 1
    cluster: str
    name: str
    issuance: str
    declaration_uid: str
    declaration_generation: int
    csr_sha256: str
    serial_number: str
    certificate_pem: str
    ca_chain_pem: str
    root_cert_pem: str
    not_before: AwareDatetime
    not_after: AwareDatetime
    signing_ca_fingerprint: str
    signed_by: str
    signed_at: AwareDatetime
    ledger_entry: str | None = None
    """The ledger entry of this signature (JSON), appended after this record is stored."""
    ledger_sequence: int | None = None
    """Its sequence in the ledger once appended; None means the append is still owed."""
    trust_epoch: str | None = None

    def answers(self, *, cluster: str, name: str, csr_pem: str) -> bool:
        """Whether this record is the answer to that request (same cluster, object and CSR)."""
        return (self.cluster, self.name, self.csr_sha256) == (cluster, name, csr_digest(csr_pem))

    def event_data(self, *, attempt: int) -> CertificateIssuedData:
        return CertificateIssuedData(
            name=self.name,
            declaration_generation=self.declaration_generation,
            attempt=attempt,
            serial_number=self.serial_number,
            certificate_pem=self.certificate_pem,
            ca_chain_pem=self.ca_chain_pem,
            root_cert_pem=self.root_cert_pem,
            not_before=self.not_before,
            not_after=self.not_after,
        )


class IssuanceClaim(BaseModel):
    """A replica is deciding and signing this issuance: the others wait, or take it over once
    `lease_until` has passed without a renewal (its holder is gone)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: Literal[1] = 1
    claimed_by: str
    """The holder's `MESHTRUST_ISSUER_INSTANCE`."""
    claimed_at: AwareDatetime
    lease_until: AwareDatetime
    """The holder's clock: renewed while it works, so a claim past it has no living holder."""


def read_entry(entry: KvEntry) -> IssuedRecord | IssuanceClaim | None:
    """What an issuance's entry holds: its record, a replica's claim, or None (logged) when it
    cannot be read (then it answers nothing and is replaced by compare-and-set)."""
    claim = decode_value(IssuanceClaim, entry.value)
    if not isinstance(claim, Undecodable):
        return claim
    return read_record(entry)


def read_record(entry: KvEntry) -> IssuedRecord | None:
    """The record in `entry`, or None (logged) when it cannot be read: junk bytes, another
    schema, or a ledger entry inside it that cannot be read. Such a record answers nothing;
    the issuance is signed again and the record replaced by compare-and-set."""
    record = decode_value(IssuedRecord, entry.value)
    if not isinstance(record, Undecodable) and record.ledger_entry is not None:
        inner = decode_value(LedgerEntry, record.ledger_entry.encode())
        if isinstance(inner, Undecodable):
            record = Undecodable(inner.reason, f"its ledger entry: {inner.message}")
    return readable(
        entry, record, unreadable="issued record unreadable; treated as absent and replaced"
    )
