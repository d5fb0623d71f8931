"""The issuance ledger: every signature, appended to the stream `MESHTRUST_LEDGER`.

The stream forbids deleting and purging (`shared.bus.ledger`), so the record of what the central
CA signed cannot be rewritten from a client. Each entry is one JSON `LedgerEntry` on subject
`meshtrust.ledger.<cluster>`, with `Nats-Msg-Id` `<issuance>:<serial>` so that a retried append
stores nothing twice. A signature is appended *before* the certificate is recorded and sent: a
crash in between leaves an entry for a certificate nobody received (honest), never a certificate
in a cluster that the ledger does not know (a gap).

`meshtrust ledger` (cli) lists the stream; it reads the JSON without importing this module, so
the field names below are the published format (schema_version 1).
"""

from __future__ import annotations

from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict

from shared.bus import Bus
from shared.bus.ledger import Ledger

LEDGER_STREAM = "MESHTRUST_LEDGER"
LEDGER_SUBJECTS = ("meshtrust.ledger.>",)


class LedgerEntry(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: Literal[1] = 1
    serial_number: str
    cluster: str
    namespace: str
    name: str
    declaration_uid: str
    declaration_generation: int
    issuance: str
    hosts: tuple[str, ...]
    org: str
    not_before: AwareDatetime
    not_after: AwareDatetime
    csr_public_key_fingerprint: str
    certificate_fingerprint: str
    signing_ca_fingerprint: str
    signed_by: str
    signed_at: AwareDatetime


def open_ledger(bus: Bus) -> Ledger:
    return Ledger(
        bus.connection,
        stream=LEDGER_STREAM,
        subjects=LEDGER_SUBJECTS,
        description="meshtrust issuance ledger: every signature of the central CA (append-only)",
        duplicate_window=bus.settings.duplicate_window,
    )


async def record_signature(ledger: Ledger, entry: LedgerEntry) -> int:
    """Append `entry`; returns its sequence. Raises `shared.bus.PublishError`."""
    return await ledger.append(
        f"meshtrust.ledger.{entry.cluster}",
        entry.model_dump_json().encode(),
        msg_id=f"{entry.issuance}:{entry.serial_number}",
    )
