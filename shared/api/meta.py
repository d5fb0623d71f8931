"""Kubernetes object bodies as the project passes them around: `Obj`, `metadata(obj)`, and the
`ObjectKey` that names one.

Objects travel as the plain JSON dicts the API serves (`Obj`): the informers cache them, the
client reads and writes them, and only the boundary that needs a field validates it. What every
caller reads is metadata, and `metadata(obj)` reads it the one way: a thin, read-only view over
`obj["metadata"]` (absent metadata reads as empty) with typed properties for the fields the
services use, in the manner of kopf's `bodies.Meta`. Here, at the bottom of `shared.api`, as
Kubernetes keeps its object metadata types in apimachinery's `apis/meta`: the API's models
(`shared.api.v1alpha2`) and the client layer (`shared.k8s`) both build on it, and it imports
neither.

Deliberately not here: validation (the pydantic models of `shared.api.v1alpha2`),
and writing: the view never changes the body it reads, and copies (`dict(metadata(obj))`) are
the caller's to make.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["Meta", "Obj", "ObjectKey", "metadata"]

Obj = dict[str, Any]
"""A Kubernetes object body as the API serves it (JSON)."""


class Meta(Mapping[str, Any]):
    """Read-only view of one object's `metadata`; as a Mapping it is the raw metadata."""

    __slots__ = ("_raw",)

    def __init__(self, raw: Mapping[str, Any]) -> None:
        self._raw = raw

    def __getitem__(self, key: str) -> Any:
        return self._raw[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._raw)

    def __len__(self) -> int:
        return len(self._raw)

    @property
    def name(self) -> str:
        """`name`, "" when unset."""
        return str(self._raw.get("name") or "")

    @property
    def namespace(self) -> str:
        """`namespace`, "" when unset (cluster-scoped, or not yet defaulted)."""
        return str(self._raw.get("namespace") or "")

    @property
    def uid(self) -> str:
        """`uid`, "" when unset (an object not yet created)."""
        return str(self._raw.get("uid") or "")

    @property
    def resource_version(self) -> str | None:
        """`resourceVersion`, None when unset."""
        value = self._raw.get("resourceVersion")
        return None if value is None else str(value)

    @property
    def generation(self) -> int:
        """`generation`, 1 when unset (the API server starts every object at 1)."""
        return int(self._raw.get("generation") or 1)

    @property
    def labels(self) -> Mapping[str, Any]:
        """`labels`, empty when unset."""
        return self._raw.get("labels") or {}

    @property
    def annotations(self) -> Mapping[str, Any]:
        """`annotations`, empty when unset."""
        return self._raw.get("annotations") or {}

    @property
    def deletion_timestamp(self) -> str | None:
        """`deletionTimestamp` (RFC 3339) when the object is being deleted, else None."""
        value = self._raw.get("deletionTimestamp")
        return str(value) if value else None


def metadata(obj: Mapping[str, Any] | None) -> Meta:
    """The view of `obj`'s metadata; no object, or metadata absent, null or not a mapping (a
    body not from an API server), reads empty."""
    raw = obj.get("metadata") if obj is not None else None
    return Meta(raw if isinstance(raw, Mapping) else {})


@dataclass(frozen=True, slots=True, order=True)
class ObjectKey:
    """`namespace/name` of an object: what the work queue holds and reconcile receives.

    Cluster-scoped objects have `namespace == ""` and print as just `name`, as client-go's
    `MetaNamespaceKeyFunc` does.
    """

    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}" if self.namespace else self.name

    @classmethod
    def parse(cls, text: str) -> ObjectKey:
        """The inverse of `str(key)`."""
        namespace, sep, name = text.partition("/")
        return cls(namespace, name) if sep else cls("", namespace)

    @classmethod
    def of(cls, obj: Mapping[str, Any]) -> ObjectKey:
        """The key of a raw object as the API returns it."""
        meta = metadata(obj)
        return cls(meta.namespace, meta.name)
