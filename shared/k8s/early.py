"""Reading an object before knowing it is the one needed, to save a round trip.

A reconcile often needs an object whose name is in another object's spec: the agent's issued
Secret is named by the IssuedCertificate, the issuer's signing Secret by the declaration. The
spec is only known once its object is read, so the two reads would run one after the other.
An informer's cached copy of the spec almost always names the same object: read that one beside
the spec's own object (`read_early`), and keep the result only if the fresh spec names the same
object (`EarlyRead.answers`); otherwise read the one it names. The cache only chooses what to
read early; every decision is made on fresh reads.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from shared.api.meta import Obj, ObjectKey
from shared.k8s.client import KubeClient
from shared.k8s.errors import KubeError, NotFound
from shared.k8s.resources import Resource

__all__ = ["NOT_READ", "EarlyRead", "read_early", "spec_ref"]


def spec_ref(obj: Mapping[str, Any] | None, field: str) -> ObjectKey | None:
    """The `{namespace, name}` reference in `spec.<field>` of a raw object (a cached copy,
    before any validation), or None when there is none."""
    ref = ((obj or {}).get("spec") or {}).get(field)
    if not isinstance(ref, dict) or not ref.get("name") or not ref.get("namespace"):
        return None
    return ObjectKey(str(ref["namespace"]), str(ref["name"]))


@dataclass(frozen=True, slots=True)
class EarlyRead:
    """What an early read found: `object` (None: absent) when `read`."""

    ref: ObjectKey | None
    object: Obj | None
    read: bool
    """False when there was nothing to read, or the read failed."""

    def answers(self, ref: ObjectKey) -> bool:
        """Whether this read is of `ref` and succeeded: its `object` stands for a read of it."""
        return self.read and self.ref == ref


NOT_READ = EarlyRead(None, None, read=False)
"""No early read (no cached copy to guess from)."""


async def read_early(kube: KubeClient, resource: Resource, ref: ObjectKey | None) -> EarlyRead:
    """Read `ref` ahead. A failure is not an error here: the caller reads the object the fresh
    spec names when this read does not answer for it, and that read raises what it raises."""
    if ref is None:
        return NOT_READ
    try:
        found: Obj | None = await kube.get(resource, ref.name, namespace=ref.namespace)
    except NotFound:
        found = None
    except KubeError:
        return EarlyRead(ref, None, read=False)
    return EarlyRead(ref, found, read=True)
