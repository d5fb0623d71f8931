"""The controller runner end to end: informer -> queue -> workers -> status, on the emulator."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections import Counter
from typing import Any

import pytest

from k8s.harness import eventually, issued_certificate
from shared.api.meta import ObjectKey
from shared.api.v1alpha2 import IssuedCertificate, IssuedCertificateStatus, State
from shared.k8s.backoff import BackoffPolicy
from shared.k8s.client import KubeClient
from shared.k8s.controller import (
    Controller,
    ControllerSettings,
    Done,
    ReconcileResult,
    RequeueAfter,
)
from shared.k8s.errors import NotFound
from shared.k8s.events import EventRecorder
from shared.k8s.informer import Informer, InformerSettings
from shared.k8s.resources import EVENTS, ISSUED_CERTIFICATES
from shared.k8s.status import update_model_status

pytestmark = pytest.mark.usefixtures("crds", "no_retry_waits")

FAST_INFORMER = InformerSettings(backoff=BackoffPolicy(base_seconds=0.02, cap_seconds=0.2))
FAST_CONTROLLER = ControllerSettings(
    workers=4, backoff=BackoffPolicy(base_seconds=0.01, cap_seconds=0.1)
)


async def test_a_controller_observes_every_object_and_writes_its_status_once(
    kube: KubeClient, namespace: str
) -> None:
    informer = Informer(kube, ISSUED_CERTIFICATES, namespace=namespace, settings=FAST_INFORMER)
    recorder = EventRecorder(kube, component="test-controller")
    active: set[ObjectKey] = set()
    overlaps: list[ObjectKey] = []
    calls: Counter[ObjectKey] = Counter()

    async def reconcile(key: ObjectKey) -> ReconcileResult:
        if key in active:
            overlaps.append(key)
        active.add(key)
        calls[key] += 1
        try:
            raw = informer.get(key)
            if raw is None:
                return Done()
            ic = IssuedCertificate.from_object(raw)
            if ic.status.observed_generation == ic.metadata.generation:
                return Done()

            def observe(fresh: IssuedCertificate) -> IssuedCertificateStatus:
                return fresh.status.model_copy(
                    update={
                        "state": State.REQUESTED,
                        "observed_generation": fresh.metadata.generation or 0,
                    }
                )

            try:
                await update_model_status(
                    kube,
                    IssuedCertificate,
                    key.name,
                    namespace=key.namespace,
                    mutate=observe,
                    current=ic,
                    recorder=recorder,
                )
            except NotFound:
                return Done()
            await asyncio.sleep(0)  # give another worker the chance to (wrongly) take this key
            return Done()
        finally:
            active.discard(key)

    controller = Controller(name="observe", reconcile=reconcile, settings=FAST_CONTROLLER)
    controller.watch(informer)

    async with asyncio.timeout(60), asyncio.TaskGroup() as tg:
        informer_task = tg.create_task(informer.run())
        runner = tg.create_task(controller.run())
        for i in range(20):
            await kube.create(ISSUED_CERTIFICATES, issued_certificate(f"ic-{i}", namespace))
        for i in range(0, 20, 2):  # a spec change: generation 2 must be observed too
            await kube.patch_merge(
                ISSUED_CERTIFICATES, f"ic-{i}", {"spec": {"org": "v2"}}, namespace=namespace
            )

        async def all_observed() -> bool:
            items = (await kube.list(ISSUED_CERTIFICATES, namespace=namespace)).items
            return len(items) == 20 and all(
                (o.get("status") or {}).get("observedGeneration") == o["metadata"]["generation"]
                for o in items
            )

        await eventually(all_observed, message="every object's generation to be observed")
        controller.stop()
        await runner
        informer_task.cancel()

    assert overlaps == [], "no key was reconciled by two workers at once"
    events = (await kube.list(EVENTS, namespace=namespace)).items
    assert {e["involvedObject"]["name"] for e in events} == {f"ic-{i}" for i in range(20)}
    assert all(e["reason"] == "Requested" for e in events)


async def test_requeue_after_brings_a_key_back(kube: KubeClient, namespace: str) -> None:
    await kube.create(ISSUED_CERTIFICATES, issued_certificate("renew-me", namespace))
    informer = Informer(kube, ISSUED_CERTIFICATES, namespace=namespace, settings=FAST_INFORMER)
    seen: list[ObjectKey] = []
    done = asyncio.Event()

    async def reconcile(key: ObjectKey) -> ReconcileResult:
        seen.append(key)
        if len(seen) >= 3:
            done.set()
            return Done()
        return RequeueAfter(0.05)

    controller = Controller(name="renew", reconcile=reconcile, settings=FAST_CONTROLLER)
    controller.watch(informer)
    async with asyncio.timeout(30), asyncio.TaskGroup() as tg:
        informer_task = tg.create_task(informer.run())
        runner = tg.create_task(controller.run())
        await done.wait()
        controller.stop()
        await runner
        informer_task.cancel()
    assert seen == [ObjectKey(namespace, "renew-me")] * 3


async def test_a_failing_reconcile_is_retried_with_backoff_until_it_succeeds(
    kube: KubeClient, namespace: str
) -> None:
    await kube.create(ISSUED_CERTIFICATES, issued_certificate("flaky", namespace))
    informer = Informer(kube, ISSUED_CERTIFICATES, namespace=namespace, settings=FAST_INFORMER)
    attempts = 0
    done = asyncio.Event()

    async def reconcile(key: ObjectKey) -> ReconcileResult:
        nonlocal attempts
        attempts += 1
        if attempts < 4:
            raise RuntimeError("not yet")
        done.set()
        return Done()

    controller = Controller(name="flaky", reconcile=reconcile, settings=FAST_CONTROLLER)
    controller.watch(informer)
    async with asyncio.timeout(30), asyncio.TaskGroup() as tg:
        informer_task = tg.create_task(informer.run())
        runner = tg.create_task(controller.run())
        await done.wait()
        controller.stop()
        await runner
        informer_task.cancel()
    assert attempts == 4
    assert controller.queue.num_requeues(ObjectKey(namespace, "flaky")) == 0


async def test_the_reconciled_state_converges_through_watch_faults(
    kube: KubeClient, kubeapi: Any, namespace: str
) -> None:
    """Spec changes keep coming while watches are closed, fail with 500s and 429s, and the
    history is compacted: in the end every object's status observes its latest generation."""
    informer = Informer(kube, ISSUED_CERTIFICATES, namespace=namespace, settings=FAST_INFORMER)

    async def reconcile(key: ObjectKey) -> ReconcileResult:
        try:
            fresh = await kube.get_model(IssuedCertificate, key.name, namespace=key.namespace)
        except NotFound:
            return Done()
        if fresh.status.observed_generation == fresh.metadata.generation:
            return Done()
        with contextlib.suppress(NotFound):  # deleted meanwhile: nothing left to observe
            await update_model_status(
                kube,
                IssuedCertificate,
                key.name,
                namespace=key.namespace,
                mutate=lambda ic: ic.status.model_copy(
                    update={"observed_generation": ic.metadata.generation or 0}
                ),
            )
        return Done()

    controller = Controller(name="converge", reconcile=reconcile, settings=FAST_CONTROLLER)
    controller.watch(informer)
    rng = random.Random(5)
    async with asyncio.timeout(60), asyncio.TaskGroup() as tg:
        informer_task = tg.create_task(informer.run())
        runner = tg.create_task(controller.run())
        for i in range(15):
            await kube.create(ISSUED_CERTIFICATES, issued_certificate(f"ic-{i}", namespace))
        for round_ in range(6):
            if round_ == 2:
                kubeapi.faults.fail_next(5, status=500, path_contains="watch=true")
            if round_ == 3:
                kubeapi.faults.fail_next(2, status=429, path_contains="watch=true", retry_after=1)
            kubeapi.faults.close_watches()
            for _ in range(10):
                name = f"ic-{rng.randrange(15)}"
                await kube.patch_merge(
                    ISSUED_CERTIFICATES,
                    name,
                    {"spec": {"org": f"org-{round_}"}},
                    namespace=namespace,
                )
            if round_ == 4:
                kubeapi.faults.compact()

        async def all_observed() -> bool:
            items = (await kube.list(ISSUED_CERTIFICATES, namespace=namespace)).items
            return all(
                (o.get("status") or {}).get("observedGeneration") == o["metadata"]["generation"]
                for o in items
            )

        await eventually(all_observed, within=40, message="every generation to be observed")
        controller.stop()
        await runner
        informer_task.cancel()
    assert informer.stats.failures >= 1
