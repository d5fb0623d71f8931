"""The event types of the bus, as they appear in subjects and in the envelope's `type`."""

from __future__ import annotations

from enum import StrEnum


class EventType(StrEnum):
    CSR_REQUESTED = "csr.requested"
    CERTIFICATE_ISSUED = "certificate.issued"
    CERTIFICATE_DENIED = "certificate.denied"
    BOUNCE_REQUESTED = "bounce.requested"
    BOUNCE_COMPLETED = "bounce.completed"
    STATUS_CHANGED = "status.changed"


class CertificateState(StrEnum):
    """The IssuedCertificate states, exactly the API's enum names."""

    PENDING = "PENDING"
    REQUESTED = "REQUESTED"
    ISSUED = "ISSUED"
    FINISHED = "FINISHED"
    FAILED = "FAILED"
