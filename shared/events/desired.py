"""Desired state: what the management cluster declares for each remote cluster.

The issuer writes one entry per declaration into the KV bucket `meshtrust-desired`, under the key
`<cluster>.<kind>.<name>`; the agent of `<cluster>` watches `<cluster>.>` and applies what it finds.
The cluster and kind tokens never contain a dot, so the name (which may) is everything after the
second dot.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, ClassVar, Literal

from pydantic import Field

from shared.events.names import (
    ClusterName,
    InvalidName,
    NamespaceName,
    ObjectName,
    check_cluster_name,
    check_object_name,
)
from shared.events.wire import OmitsUnset, TrustEpoch

DESIRED_BUCKET = "meshtrust-desired"

TRUST_EPOCH_ANNOTATION = "meshtrust.io/trust-epoch"
"""Set by the issuer on a desired IssuedCertificate during a root rotation (docs/rotation.md):
which step of the rotation the cluster is asked to be on. A change of its value asks the agent
for a new issuance (a new key and CSR, sent with that `trust_epoch`), as a new generation does;
its absence is the epoch outside any rotation."""


class DesiredKind(StrEnum):
    """Key token of each kind (Kubernetes resource plural: lower-case, no dots)."""

    ISSUED_CERTIFICATE = "issuedcertificates"
    POD_BOUNCE_DIRECTIVE = "podbouncedirectives"


def desired_key(cluster: str, kind: DesiredKind, name: str) -> str:
    """`<cluster>.<kind>.<name>`, every part validated."""
    return f"{check_cluster_name(cluster)}.{kind.value}.{check_object_name(name)}"


def cluster_prefix(cluster: str) -> str:
    """The KV watch filter of one cluster's agent: `<cluster>.>`."""
    return f"{check_cluster_name(cluster)}.>"


def parse_desired_key(key: str) -> tuple[str, DesiredKind, str]:
    """Split a key into (cluster, kind, name); `InvalidName` when it is not one of ours."""
    parts = key.split(".", 2)
    if len(parts) != 3:
        raise InvalidName(f"desired-state key {key!r} is not <cluster>.<kind>.<name>")
    cluster, kind, name = parts
    try:
        parsed_kind = DesiredKind(kind)
    except ValueError:
        raise InvalidName(f"desired-state key {key!r} names no known kind") from None
    return check_cluster_name(cluster), parsed_kind, check_object_name(name)


class DesiredObject(OmitsUnset):
    """The value of a desired-state key: the declaration's identity and its spec.

    `spec` is kept as the JSON object the declaration carries; the agent validates it with the
    Kubernetes models of `shared.k8s` before applying it.
    """

    _omitted_when_none: ClassVar[tuple[str, ...]] = ("trust_epoch",)

    schema_version: Literal[1] = 1
    cluster: ClusterName
    kind: DesiredKind
    name: ObjectName
    namespace: NamespaceName = Field(
        description="Where the agent applies it in the remote cluster: for an IssuedCertificate "
        "the namespace of its issuedCertificateSecret, for a PodBounceDirective that of the "
        "podBounceDirective reference of the IssuedCertificate that names it."
    )
    uid: str = Field(min_length=1, max_length=64, description="The declaration's metadata.uid.")
    generation: int = Field(ge=1, description="The declaration's metadata.generation.")
    spec: dict[str, Any]
    signing_chain_fingerprint: str | None = Field(
        default=None,
        pattern=r"^[0-9a-f]{64}$",
        description="IssuedCertificates only: SHA-256 (lower-case hex) of the signing CA's "
        "chain (its certificates' DER, signing certificate first, root last) as the issuer "
        "loaded it from signingCertificateSecret. It changes when the signing CA changes; the "
        "agent re-issues when it differs from the value its current certificate was issued "
        "under, as it does when the generation changes. None for PodBounceDirectives.",
    )
    trust_epoch: TrustEpoch | None = Field(
        default=None,
        description="IssuedCertificates during a root rotation only: the annotation "
        "`meshtrust.io/trust-epoch` the agent copies onto the remote object (the step the "
        "cluster is asked to be on); absent from the JSON when None, as before it existed.",
    )
