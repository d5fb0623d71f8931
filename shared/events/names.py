"""Validated names that end up in NATS subjects, KV keys and Kubernetes object keys.

A cluster name is a DNS-1123 label (what a Kubernetes namespace name is, since the namespace in the
management cluster *is* the cluster's registration); it contains no `.`, `*` or `>`, so it is
always exactly one NATS subject token. Object names are DNS-1123 subdomains, as Kubernetes names
are; they may contain dots, which is why they always come last in a subject or key.
"""

from __future__ import annotations

import re
import uuid
from typing import Annotated

from pydantic import StringConstraints

from shared.runtime.errors import InvalidInput

DNS1123_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS1123_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
ISSUANCE_ID = r"^[A-Za-z0-9_-]{8,64}$"

ClusterName = Annotated[str, StringConstraints(pattern=DNS1123_LABEL, max_length=63)]
"""A cluster's name: a DNS-1123 label (lower-case alphanumerics and '-', at most 63)."""

NamespaceName = ClusterName
"""Kubernetes namespaces are DNS-1123 labels too."""

ObjectName = Annotated[str, StringConstraints(pattern=DNS1123_SUBDOMAIN, max_length=253)]
"""A Kubernetes object name: a DNS-1123 subdomain of at most 253 characters."""

IssuanceId = Annotated[str, StringConstraints(pattern=ISSUANCE_ID)]
"""Identifies one issuance: one key, one CSR, one certificate. Safe in subjects and KV keys."""


class InvalidName(InvalidInput, ValueError):
    """A name that cannot be used as a cluster, object or issuance name; says which and why."""


def check_cluster_name(name: str) -> str:
    """Return `name` if it is a valid cluster name, else raise `InvalidName` saying why."""
    if not name:
        raise InvalidName("cluster name is empty")
    if len(name) > 63:
        raise InvalidName(f"cluster name {name!r} is longer than 63 characters")
    if not re.match(DNS1123_LABEL, name):
        raise InvalidName(
            f"cluster name {name!r} is not a DNS-1123 label "
            "(lower-case letters, digits and '-', starting and ending with a letter or digit)"
        )
    return name


def check_object_name(name: str) -> str:
    """Return `name` if it is a valid Kubernetes object name, else raise `InvalidName`."""
    if not name or len(name) > 253 or not re.match(DNS1123_SUBDOMAIN, name):
        raise InvalidName(f"object name {name!r} is not a DNS-1123 subdomain")
    return name


def new_issuance_id() -> str:
    """A fresh, random issuance id (128 bits, hex)."""
    return uuid.uuid4().hex
