"""Two issuer replicas at once: every CSR is signed exactly once."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from pathlib import Path

from issuer.issuer_testing import declaration, running, world
from shared.bus import NatsSettings
from shared.bus.ledger import Ledger
from shared.events import CertificateIssued
from shared.k8s.resources import ISSUED_CERTIFICATES
from support.waiting import eventually

CSRS = 200


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
        # Everything is waiting before either replica starts, so both pull from the same backlog.
        await asyncio.gather(*(w.bus.publish(r) for r in requests))

        async with running(w.settings("issuer-a"), w.settings("issuer-b")):
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
        # each issuance asked twice (attempt 1 and its re-send) before any issuer runs
        seconds = [
            type(r).model_validate(
                {**r.model_dump(), "data": {**r.data.model_dump(), "attempt": 2}}
            )
            for r in firsts
        ]
        await asyncio.gather(*(w.bus.publish(r) for r in [*firsts, *seconds]))

        async with running(w.settings("issuer-a"), w.settings("issuer-b")):
            await eventually(lambda: w.answers.count() >= 40, within=60, message="40 answers")
            for request in firsts:
                answers = w.answers.by_issuance[request.issuance]
                assert len(answers) == 2
                assert all(isinstance(a, CertificateIssued) for a in answers)
                assert len({a.data.serial_number for a in answers}) == 1  # type: ignore[union-attr]
