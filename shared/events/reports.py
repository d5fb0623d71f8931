"""Cluster reports: what each agent says about its cluster at a fixed interval, changed or not.

Each agent writes one value into the KV bucket `meshtrust-reports` under its cluster's name
(history 1: storage is bounded by the number of clusters, the last report survives issuer
restarts, and every issuer replica reads the same). The hub lets an agent write only its own
key (`$KV.meshtrust-reports.<cluster>`, docs/bus.md); the issuer reads them all and keeps each
cluster's last-seen time (docs/issuer.md, "Liveness").

A report is not an event: it goes to no stream of record, so 1,000 clusters reporting every
minute grow nothing but 1,000 keys.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints

from shared.events.enums import CertificateState
from shared.events.names import ClusterName, NamespaceName, ObjectName

REPORTS_BUCKET = "meshtrust-reports"
REPORTS_DESCRIPTION = "each cluster's last report (its agent writes its own key)"
MAX_REPORTED = 1000
"""Certificates one report may list (a cluster holds a handful)."""


class ReportedCertificate(BaseModel):
    """One IssuedCertificate as the cluster holds it now."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: ObjectName
    namespace: NamespaceName = Field(description="Where the IssuedCertificate is, remotely.")
    state: CertificateState
    generation: int | None = Field(
        default=None, ge=1, description="The declaration generation the object was applied from."
    )
    not_after: AwareDatetime | None = None
    renewal_time: AwareDatetime | None = None
    error: Annotated[str, StringConstraints(max_length=4096)] = ""


class ClusterReport(BaseModel):
    """The value of key `<cluster>` in `meshtrust-reports`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: int = Field(default=1, ge=1, le=1)
    cluster: ClusterName
    source: Annotated[str, StringConstraints(pattern=r"^[a-z]+/[a-z0-9.-]{1,253}$")]
    time: AwareDatetime = Field(description="When the agent made the report (its clock).")
    interval: float = Field(gt=0, description="Seconds until the agent's next report.")
    certificates: tuple[ReportedCertificate, ...] = Field(default=(), max_length=MAX_REPORTED)

    def encode(self) -> bytes:
        return self.model_dump_json().encode()

    @classmethod
    def decode(cls, value: bytes) -> ClusterReport:
        """Raises pydantic.ValidationError for anything that is not a report."""
        return cls.model_validate_json(value)
