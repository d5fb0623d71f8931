"""Status writes through /status: re-read and retry on 409 Conflict, nothing lost."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from k8s.harness import issued_certificate
from shared.api.v1alpha2 import IssuedCertificate, IssuedCertificateStatus, State
from shared.k8s.client import KubeClient
from shared.k8s.errors import Conflict, NotFound
from shared.k8s.events import EventRecorder
from shared.k8s.resources import EVENTS, ISSUED_CERTIFICATES
from shared.k8s.status import StatusRetry, update_model_status, update_status

pytestmark = pytest.mark.usefixtures("crds", "no_retry_waits")


async def test_two_writers_racing_from_one_stale_read_are_both_applied(
    kube: KubeClient, namespace: str
) -> None:
    stale = await kube.create(ISSUED_CERTIFICATES, issued_certificate("ic", namespace))

    def set_field(field: str, value: str) -> Any:
        def mutate(obj: dict[str, Any]) -> dict[str, Any]:
            return {**(obj.get("status") or {}), field: value}

        return mutate

    first, second = await asyncio.gather(
        update_status(
            kube,
            ISSUED_CERTIFICATES,
            "ic",
            namespace=namespace,
            mutate=set_field("serialNumber", "0a"),
            current=stale,
        ),
        update_status(
            kube,
            ISSUED_CERTIFICATES,
            "ic",
            namespace=namespace,
            mutate=set_field("issuanceId", "i-1"),
            current=stale,
        ),
    )
    final = await kube.get(ISSUED_CERTIFICATES, "ic", namespace=namespace)
    assert final["status"]["serialNumber"] == "0a"
    assert final["status"]["issuanceId"] == "i-1"
    assert sorted([first.attempts, second.attempts]) == [1, 2], (
        "exactly one of them hit a 409 and retried"
    )


async def test_many_concurrent_increments_lose_no_update(kube: KubeClient, namespace: str) -> None:
    await kube.create(ISSUED_CERTIFICATES, issued_certificate("ic", namespace))

    def increment(obj: dict[str, Any]) -> dict[str, Any]:
        status = obj.get("status") or {}
        return {**status, "failedAttempts": int(status.get("failedAttempts", 0)) + 1}

    writers = 12
    retry = StatusRetry(attempts=writers + 1)
    results = await asyncio.gather(
        *(
            update_status(
                kube, ISSUED_CERTIFICATES, "ic", namespace=namespace, mutate=increment, retry=retry
            )
            for _ in range(writers)
        )
    )
    final = await kube.get(ISSUED_CERTIFICATES, "ic", namespace=namespace)
    assert final["status"]["failedAttempts"] == writers
    assert max(r.attempts for r in results) > 1, "the writers really raced"


async def test_without_retries_a_stale_write_is_a_conflict(
    kube: KubeClient, namespace: str
) -> None:
    stale = await kube.create(ISSUED_CERTIFICATES, issued_certificate("ic", namespace))
    await kube.patch_status(
        ISSUED_CERTIFICATES, "ic", {"status": {"error": "moved on"}}, namespace=namespace
    )
    with pytest.raises(Conflict):
        await update_status(
            kube,
            ISSUED_CERTIFICATES,
            "ic",
            namespace=namespace,
            mutate=lambda obj: {"error": "mine"},
            current=stale,
            retry=StatusRetry(attempts=1),
        )


async def test_an_unchanged_status_is_not_written(kube: KubeClient, namespace: str) -> None:
    await kube.create(ISSUED_CERTIFICATES, issued_certificate("ic", namespace))
    first = await update_status(
        kube,
        ISSUED_CERTIFICATES,
        "ic",
        namespace=namespace,
        mutate=lambda obj: {"state": "REQUESTED"},
    )
    second = await update_status(
        kube,
        ISSUED_CERTIFICATES,
        "ic",
        namespace=namespace,
        mutate=lambda obj: {"state": "REQUESTED"},
    )
    assert first.changed
    assert not second.changed
    assert (
        second.object["metadata"]["resourceVersion"] == first.object["metadata"]["resourceVersion"]
    )


async def test_a_status_write_for_a_deleted_object_is_not_found(
    kube: KubeClient, namespace: str
) -> None:
    with pytest.raises(NotFound):
        await update_status(
            kube, ISSUED_CERTIFICATES, "gone", namespace=namespace, mutate=lambda obj: {}
        )


async def test_model_status_updates_see_the_fresh_object(kube: KubeClient, namespace: str) -> None:
    await kube.create(ISSUED_CERTIFICATES, issued_certificate("ic", namespace))
    await kube.patch_merge(
        ISSUED_CERTIFICATES, "ic", {"spec": {"org": "acme"}}, namespace=namespace
    )

    def observe(ic: IssuedCertificate) -> IssuedCertificateStatus:
        return ic.status.model_copy(
            update={"state": State.REQUESTED, "observed_generation": ic.metadata.generation or 0}
        )

    written, write = await update_model_status(
        kube, IssuedCertificate, "ic", namespace=namespace, mutate=observe
    )
    assert write.changed
    assert written.status.state is State.REQUESTED
    assert written.status.observed_generation == 2
    assert written.metadata.generation == 2, "a status write does not bump the generation"


async def test_a_state_change_written_with_a_recorder_is_an_event(
    kube: KubeClient, namespace: str
) -> None:
    await kube.create(ISSUED_CERTIFICATES, issued_certificate("ic", namespace))
    recorder = EventRecorder(kube, component="test")

    def fail(ic: IssuedCertificate) -> IssuedCertificateStatus:
        return ic.status.model_copy(
            update={"state": State.FAILED, "error": "CSR denied: hosts differ"}
        )

    for _ in range(2):  # the second write changes nothing, so records nothing
        await update_model_status(
            kube, IssuedCertificate, "ic", namespace=namespace, mutate=fail, recorder=recorder
        )
    events = (await kube.list(EVENTS, namespace=namespace)).items
    assert [(e["type"], e["reason"], e["message"], e["count"]) for e in events] == [
        ("Warning", "Failed", "CSR denied: hosts differ", 1)
    ]
