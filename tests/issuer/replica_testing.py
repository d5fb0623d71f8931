"""Issuer replicas run in-process, each with its own metrics registry, one of which a test can
kill hard (its task cancelled: no grace, its claims and unacknowledged CSRs left behind, as a
crashed pod leaves them); and what the bus holds afterwards (ledger, `meshtrust-issued`)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry

from issuer.issuer_testing import World
from services.issuer.app import serve
from services.issuer.issued import ISSUED_BUCKET, IssuanceClaim, IssuedRecord
from services.issuer.settings import IssuerSettings
from shared.bus import Bucket, KvEntry, Snapshot
from shared.bus.ledger import Ledger
from shared.runtime.health import HealthServer
from shared.runtime.metrics import new_registry
from support.waiting import eventually


@dataclass
class Replica:
    name: str
    registry: CollectorRegistry
    health: HealthServer
    task: asyncio.Task[None]

    def total(self, metric: str) -> float:
        """A counter summed over its labels (`metric` as exposed, with `_total`)."""
        return sum(
            sample.value
            for family in self.registry.collect()
            for sample in family.samples
            if sample.name == metric
        )

    async def kill(self) -> None:
        """Cancel the replica now (no stop, no grace) and wait until it is gone."""
        self.task.cancel()
        await asyncio.wait([self.task])


@asynccontextmanager
async def replicas(*settings: IssuerSettings) -> AsyncIterator[dict[str, Replica]]:
    """One replica per settings, each with its own registry, until the body ends (or a test
    kills one); yields them by instance name once every health server is up."""
    stop = asyncio.Event()
    running: dict[str, Replica] = {}
    async with asyncio.TaskGroup() as group:
        for one in settings:
            registry = new_registry()
            health = HealthServer(one.health, registry=registry)
            task = group.create_task(
                serve(one, stop=stop, handle_signals=False, health=health), name=one.instance
            )
            running[one.instance] = Replica(one.instance, registry, health, task)
        try:
            await eventually(
                lambda: all(r.health.started.is_set() or r.task.done() for r in running.values()),
                message="every replica up",
            )
            yield running
        finally:
            stop.set()


async def ledger_entries(w: World) -> list[dict[str, Any]]:
    ledger = Ledger(w.bus.connection, stream="MESHTRUST_LEDGER", subjects=("meshtrust.ledger.>",))
    return [json.loads(entry.data) async for entry in ledger.read()]


async def issued_bucket(w: World) -> Bucket:
    return await w.bus.bucket(ISSUED_BUCKET, history=1)


async def issued_entries(w: World) -> dict[str, KvEntry]:
    """Every live entry of `meshtrust-issued`, by key (one snapshot)."""
    updates = (await issued_bucket(w)).watch(">")
    try:
        first = await anext(updates)
    finally:
        await updates.aclose()
    assert isinstance(first, Snapshot)
    return dict(first.entries)


def claims_of(entries: dict[str, KvEntry], holder: str) -> set[str]:
    """The keys whose entry is a claim held by `holder`."""
    return {
        key
        for key, entry in entries.items()
        if b'"claimed_by"' in entry.value
        and IssuanceClaim.model_validate_json(entry.value).claimed_by == holder
    }


def record_of(entry: KvEntry | None) -> IssuedRecord | None:
    """The record in `entry`; None while it is absent or still a claim."""
    if entry is None or b'"claimed_by"' in entry.value:
        return None
    return IssuedRecord.model_validate_json(entry.value)
