"""`ClusterRegistration`: what one cluster may be issued, as its administrator sets it.

A ClusterRegistration lives in the issuer's registration namespace (`meshtrust-system` by
default), one per cluster, named after the cluster (the namespace of its declarations). Its
spec bounds every declaration of that cluster, whatever the declaration's author writes:

- `hosts`: host patterns an intermediate's SANs must match, `*` standing for one or more
  characters other than `/` (`spiffe://east.example/ns/*/sa/*`, `*.east.example`);
- `signingCertificateSecrets`: the CA Secrets the cluster's declarations may name;
- `maxTTL`: the longest lifetime a declaration may ask (a Go duration, as certOptions.ttl);
- `issuance`: the cluster's token bucket (perHour, burst), instead of the issuer's default;
- `nameConstraints`: the trust domain and DNS suffixes the issued intermediates are constrained
  to (a critical X.509 NameConstraints extension with those permitted subtrees).

Every field but the name is optional: an absent one leaves that rule to the issuer's settings.
Wire format as `shared.api.v1alpha2` (camelCase, frozen, unknown spec fields refused); this module
does no I/O. The decisions are in `services.issuer.registrations`.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import ClassVar, Literal

from pydantic import Field, field_validator

from shared.api.durations import parse_duration
from shared.api.v1alpha2 import API_VERSION, ObjectMeta, ObjectRef, _Object, _Wire

__all__ = [
    "KIND",
    "PLURAL",
    "ClusterRegistration",
    "ClusterRegistrationSpec",
    "IssuanceRate",
    "NameConstraintsSpec",
    "host_pattern",
]

KIND = "ClusterRegistration"
PLURAL = "clusterregistrations"

_DNS_NAME = re.compile(
    r"^(?=.{1,253}$)[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$"
)


def host_pattern(pattern: str) -> re.Pattern[str]:
    """The regular expression of a host pattern: `*` is one or more characters but `/`;
    everything else is literal."""
    return re.compile("[^/]+".join(re.escape(part) for part in pattern.split("*")))


class IssuanceRate(_Wire):
    """A token bucket: `burst` signatures at once, then `perHour` an hour."""

    per_hour: float = Field(gt=0)
    burst: int = Field(ge=1)


class NameConstraintsSpec(_Wire):
    """The permitted subtrees of the issued intermediates."""

    trust_domain: str | None = None
    """The SPIFFE trust domain: URIs whose host is exactly this."""
    dns_suffixes: tuple[str, ...] = ()
    """DNS names equal to or under each suffix."""

    @field_validator("trust_domain")
    @classmethod
    def _trust_domain(cls, value: str | None) -> str | None:
        if value is not None and not _DNS_NAME.match(value):
            raise ValueError(f"trustDomain {value!r} is not a lowercase DNS name")
        return value

    @field_validator("dns_suffixes")
    @classmethod
    def _suffixes(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for suffix in value:
            if not _DNS_NAME.match(suffix):
                raise ValueError(f"dnsSuffixes: {suffix!r} is not a lowercase DNS name")
        return value

    @property
    def empty(self) -> bool:
        return self.trust_domain is None and not self.dns_suffixes


class ClusterRegistrationSpec(_Wire):
    hosts: tuple[str, ...] = ()
    """Empty: any host (the key policy and the declaration still decide)."""
    signing_certificate_secrets: tuple[ObjectRef, ...] = ()
    """Empty: any CA Secret in the issuer's signing namespaces."""
    max_ttl: str | None = Field(default=None, alias="maxTTL")
    issuance: IssuanceRate | None = None
    name_constraints: NameConstraintsSpec | None = None

    @field_validator("max_ttl")
    @classmethod
    def _positive(cls, value: str | None) -> str | None:
        if value is not None and parse_duration(value) <= timedelta(0):
            raise ValueError("maxTTL must be longer than zero")
        return value

    @property
    def max_lifetime(self) -> timedelta | None:
        return None if self.max_ttl is None else parse_duration(self.max_ttl)


class ClusterRegistration(_Object):
    """certificates.smh.solo.io/v1alpha2 ClusterRegistration (a meshtrust kind)."""

    KIND: ClassVar[str] = KIND
    PLURAL: ClassVar[str] = PLURAL

    api_version: str = API_VERSION
    kind: Literal["ClusterRegistration"] = "ClusterRegistration"
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    spec: ClusterRegistrationSpec = Field(default_factory=ClusterRegistrationSpec)
    status: dict[str, object] = Field(default_factory=dict)
