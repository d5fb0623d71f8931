"""The liveness check writes each declaration from the cache as it is at its turn: a declaration
the status mirror wrote while the check was busy with another is not written from the copy the
check began with (that write would be a 409, a read and a second write)."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

from issuer.issuer_testing import declaration, world
from services.issuer.heartbeats import Heartbeats
from shared.api.meta import Obj, ObjectKey
from shared.api.v1alpha2 import IssuedCertificate, State
from shared.bus import NatsSettings
from shared.k8s import KubeClient
from shared.k8s.informer import Informer, version_of
from shared.k8s.resources import ISSUED_CERTIFICATES, Resource
from support.waiting import eventually

NOW = dt.datetime(2026, 12, 7, 12, 0, tzinfo=dt.UTC)


class MirrorWritesMeanwhile:
    """The management API as the check uses it (real requests to the emulator), with another
    writer (the status mirror, played here) changing the other declaration's status while the
    check's first write is under way, and the informer seeing it before that write returns."""

    def __init__(self, kube: KubeClient, informer: Informer) -> None:
        self._kube = kube
        self._informer = informer
        self.wrote_meanwhile = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._kube, name)

    async def replace_status(self, resource: Resource, body: Mapping[str, Any]) -> Obj:
        written = await self._kube.replace_status(resource, body)
        if not self.wrote_meanwhile:
            self.wrote_meanwhile = True
            other = "b" if body["metadata"]["name"] == "a" else "a"
            changed = await self._kube.patch_status(
                ISSUED_CERTIFICATES, other, {"status": {"state": "REQUESTED"}}, namespace="east"
            )
            key = ObjectKey("east", other)
            await eventually(
                lambda: version_of(self._informer.get(key) or {}) == version_of(changed),
                message="the mirror's write in the cache",
            )
        return written


async def test_a_check_writes_each_declaration_from_the_freshest_cached_copy(
    tmp_path: Path, nats_settings: NatsSettings
) -> None:
    async with world(tmp_path, nats_settings) as w:
        for name in ("a", "b"):
            await w.create(declaration("east", name))
        informer = Informer(w.kube, ISSUED_CERTIFICATES, namespace="east")
        watching = asyncio.create_task(informer.run())
        try:
            await informer.wait_synced()
            kube = MirrorWritesMeanwhile(w.kube, informer)
            heartbeats = Heartbeats(
                w.settings(), kube=cast(KubeClient, kube), declarations=informer, clock=lambda: NOW
            )
            heartbeats.noted("east", NOW)  # both declarations get a lastSeenTime
            await heartbeats.check()
            assert kube.wrote_meanwhile
            assert heartbeats.retried == 0  # no write met a conflict
            for name in ("a", "b"):
                raw = await w.kube.get(ISSUED_CERTIFICATES, name, namespace="east")
                assert IssuedCertificate.from_object(raw).status.last_seen_time == NOW
            # and the mirror's write survived the check's
            raw = await w.kube.get(ISSUED_CERTIFICATES, "b", namespace="east")
            other = await w.kube.get(ISSUED_CERTIFICATES, "a", namespace="east")
            states = {
                IssuedCertificate.from_object(raw).status.state,
                IssuedCertificate.from_object(other).status.state,
            }
            assert State.REQUESTED in states
        finally:
            watching.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watching
