"""Which IssuedCertificate changes wake the reconciler: not its own status writes, nor the
event of an object the applier handed over already."""

from __future__ import annotations

from typing import Any, cast

import pytest

from services.agent.app import Handoff
from shared.api.meta import ObjectKey
from shared.events import DesiredKind
from shared.k8s.client import KubeClient
from shared.k8s.informer import EventType, Informer, InformerEvent, unless_status_only
from shared.k8s.resources import ISSUED_CERTIFICATES

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


def test_an_issued_certificate_the_applier_created_is_handed_over_once() -> None:
    """The applier's create goes to the reconciler's queue at once; the informer's ADDED of
    that version is then dropped (once), and the created object answers for the cache until
    the informer has it. Other kinds, and other versions, are not handed over."""
    queued: list[ObjectKey] = []
    informer = Informer(cast("KubeClient", None), ISSUED_CERTIFICATES)  # never run: empty
    handoff = Handoff([informer])
    handoff.queue = queued.append
    created = changed(metadata={"resourceVersion": "5"})

    handoff.created(DesiredKind.POD_BOUNCE_DIRECTIVE, created)
    assert queued == []
    handoff.created(DesiredKind.ISSUED_CERTIFICATE, created)
    assert queued == [KEY]
    assert handoff.cached(KEY) is created
    assert handoff.map_event(InformerEvent(EventType.ADDED, KEY, created)) == []
    assert handoff.cached(KEY) is None  # the informer's own copy from now on
    assert handoff.map_event(InformerEvent(EventType.ADDED, KEY, created)) == [KEY]

    handoff.created(DesiredKind.ISSUED_CERTIFICATE, created)
    newer = changed(metadata={"resourceVersion": "6"})
    assert handoff.map_event(InformerEvent(EventType.ADDED, KEY, newer)) == [KEY]
