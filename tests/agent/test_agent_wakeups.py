"""Which IssuedCertificate changes wake the reconciler: not its own status writes."""

from __future__ import annotations

from typing import Any

import pytest

from shared.k8s.informer import EventType, InformerEvent, unless_status_only
from shared.k8s.models import ObjectKey

KEY = ObjectKey("istio-system", "ca")
BASE: dict[str, Any] = {
    "metadata": {"name": "ca", "namespace": "istio-system", "resourceVersion": "1"},
    "spec": {"hosts": ["spiffe://x"]},
    "status": {"state": "PENDING"},
}


def changed(**parts: Any) -> dict[str, Any]:
    obj = {k: (dict(v) if isinstance(v, dict) else v) for k, v in BASE.items()}
    for part, value in parts.items():
        obj[part] = {**obj[part], **value}
    return obj


def modified(**parts: Any) -> InformerEvent:
    return InformerEvent(EventType.MODIFIED, KEY, changed(**parts), BASE)


@pytest.mark.parametrize(
    ("event", "wakes"),
    [
        (modified(status={"state": "REQUESTED"}, metadata={"resourceVersion": "2"}), False),
        (modified(metadata={"annotations": {"meshtrust.io/verdict": "x"}}), True),
        (modified(spec={"hosts": ["spiffe://y"]}), True),
        (InformerEvent(EventType.MODIFIED, KEY, BASE, None), True),
        (InformerEvent(EventType.ADDED, KEY, BASE), True),
        (InformerEvent(EventType.DELETED, KEY, BASE), True),
    ],
    ids=[
        "its own status write does not",
        "a verdict annotation from a handler does",
        "a spec change does",
        "a change whose old state is unknown does",
        "an added object does",
        "a deleted object does",
    ],
)
def test_reconciler_wakeups(event: InformerEvent, wakes: bool) -> None:
    assert list(unless_status_only(event)) == ([KEY] if wakes else [])
