"""The base of every model on the wire (events and desired state): frozen, unknown fields
refused, and the optional fields added after schema_version 1 absent from the JSON when unset."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar

from pydantic import (
    BaseModel,
    ConfigDict,
    SerializerFunctionWrapHandler,
    StringConstraints,
    model_serializer,
)

__all__ = ["OmitsUnset", "TrustEpoch", "WireModel"]


class WireModel(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class OmitsUnset(WireModel):
    """A model with optional fields added after schema_version 1: each is absent from the JSON
    when not set (`_omitted_when_none`), so that a value without it reads, and is signed into
    the audit stream, as it did before the field existed."""

    _omitted_when_none: ClassVar[tuple[str, ...]] = ()

    @model_serializer(mode="wrap")
    def _without_unset(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        for name in self._omitted_when_none:
            if data.get(name) is None:
                data.pop(name, None)
        return data


TrustEpoch = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9.-]{0,252}$")]
"""Which step of a root rotation an issuance belongs to (docs/rotation.md): set by the issuer on
the desired IssuedCertificate (annotation `meshtrust.io/trust-epoch`), sent back by the agent
with the CSR it made for that step."""
