"""Two issuer replicas at once: every CSR is signed exactly once, and both share the work.

Both replicas are ready before the CSRs arrive, and the API server answers 0.2 s late (a fault
of the emulator), so each CSR is held that long: one replica holds at most 8 of a cluster's CSRs
at once (`CSR_CLUSTER_IN_FLIGHT`) while the cluster's durable lets 16 out
(`CSR_MAX_ACK_PENDING`), so the other 8 can only go to the other replica. Both sign by design,
not by luck of timing."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from pathlib import Path

from issuer.issuer_testing import declaration, world
from issuer.replica_testing import replicas
from shared.bus import NatsSettings
from shared.bus.fleet import CSR_CLUSTER_IN_FLIGHT, CSR_MAX_ACK_PENDING
from shared.bus.ledger import Ledger
from shared.events import CertificateIssued
from shared.k8s.resources import ISSUED_CERTIFICATES
from support.metrics import ready_status
from support.waiting import eventually

CSRS = 200
SIGNATURES = "meshtrust_issuer_signatures_total"
DISCARDED = "meshtrust_issuer_signatures_discarded_total"


async def test_two_replicas_sign_two_hundred_csrs_once_each(
    tmp_path: Path, nats_settings: NatsSettings
) -> None:
    async with world(tmp_path, nats_settings) as w:
        await w.create(declaration("east", "istio-ca"))
        await w.create(declaration("west", "istio-ca"))
        east, west = w.agent("east"), w.agent("west")
        east_decl = await w.kube.get(ISSUED_CERTIFICATES, "istio-ca", namespace="east")
        west_decl = await w.kube.get(ISSUED_CERTIFICATES, "istio-ca", namespace="west")
        requests = [
            (east if n % 2 else west).request(east_decl if n % 2 else west_decl)
            for n in range(CSRS)
        ]
        assert CSR_CLUSTER_IN_FLIGHT < CSR_MAX_ACK_PENDING  # what makes both replicas sign

        async with replicas(w.settings("issuer-a"), w.settings("issuer-b")) as running:
            for replica in running.values():
                port = replica.health.port
                await eventually(lambda p=port: _ready(p), message=f"{replica.name} ready")
            w.api.faults.set_latency(0.2)
            await asyncio.gather(*(w.bus.publish(r) for r in requests))
            await eventually(lambda: w.answers.count() >= CSRS, within=60, message="200 answers")
            answers = [w.answers.by_issuance[r.issuance] for r in requests]
            assert all(len(a) == 1 for a in answers)
            issued = [a[0] for a in answers]
            assert all(isinstance(a, CertificateIssued) for a in issued)
            serials = [a.data.serial_number for a in issued]  # type: ignore[union-attr]
            assert len(set(serials)) == CSRS

            ledger = Ledger(
                w.bus.connection, stream="MESHTRUST_LEDGER", subjects=("meshtrust.ledger.>",)
            )
            entries = [json.loads(e.data) async for e in ledger.read()]
            assert len(entries) == CSRS
            assert Counter(e["issuance"] for e in entries) == Counter(r.issuance for r in requests)
            assert sorted(e["serial_number"] for e in entries) == sorted(serials)
            signers = Counter(e["signed_by"] for e in entries)
            assert set(signers) == {"issuer-a", "issuer-b"}, signers
            # each replica's every signature is one ledger entry of its own: none made twice
            for name, replica in running.items():
                assert replica.total(SIGNATURES) == signers[name], name
                assert replica.total(DISCARDED) == 0
            issued_bucket = await w.bus.bucket("meshtrust-issued")
            assert len(await issued_bucket.keys()) == CSRS


async def test_replicas_racing_for_one_issuance_send_one_certificate(
    tmp_path: Path, nats_settings: NatsSettings
) -> None:
    async with world(tmp_path, nats_settings) as w:
        await w.create(declaration("east", "istio-ca"))
        decl = await w.kube.get(ISSUED_CERTIFICATES, "istio-ca", namespace="east")
        east = w.agent("east")
        firsts = [east.request(decl) for _ in range(20)]
        seconds = [  # each issuance's re-send (attempt 2)
            r.model_copy(update={"data": r.data.model_copy(update={"attempt": 2})}) for r in firsts
        ]
        # Stored in runs of 8 first copies, then their 8 re-sends: a replica fetches 8 of a
        # cluster's CSRs at once, so a run of first copies and the run of their re-sends tend
        # to go to different replicas, while the API's latency keeps the first copies signing.
        run = CSR_CLUSTER_IN_FLIGHT
        order = [
            request
            for start in range(0, len(firsts), run)
            for request in (*firsts[start : start + run], *seconds[start : start + run])
        ]

        async with replicas(w.settings("issuer-a"), w.settings("issuer-b")) as running:
            for replica in running.values():
                port = replica.health.port
                await eventually(lambda p=port: _ready(p), message=f"{replica.name} ready")
            w.api.faults.set_latency(0.2)
            for request in order:  # in this order in the stream
                await w.bus.publish(request)
            await eventually(lambda: w.answers.count() >= 40, within=60, message="40 answers")
            # one signature per issuance across both replicas: the claim, not the record's
            # compare-and-set, decided (no signature was made and dropped)
            assert sum(r.total(SIGNATURES) for r in running.values()) == 20
            assert sum(r.total(DISCARDED) for r in running.values()) == 0
            for request in firsts:
                answers = w.answers.by_issuance[request.issuance]
                assert len(answers) == 2
                assert all(isinstance(a, CertificateIssued) for a in answers)
                assert len({a.data.serial_number for a in answers}) == 1  # type: ignore[union-attr]


async def _ready(port: int | None) -> bool:
    return await ready_status(port) == 200
