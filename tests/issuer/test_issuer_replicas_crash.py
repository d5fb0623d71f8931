"""Three issuer replicas share a storm of CSRs and one is killed mid-storm: every issuance is
answered, signed once, ledgered once, and the survivors take over the dead replica's claims.
A third of the issuances are asked twice at once (the agent's re-send right behind the first
copy), so that replicas race for them.

The API server answers every request 0.3 s late while the storm is on (a fault of the
emulator), and 2 s late from a quarter of the storm on, until the kill: a CSR's reads of its
declaration and signing Secret keep its claim at least that long, so the replica killed once it
was seen holding claims (a scan of `meshtrust-issued`, which takes far less than 2 s even on a
loaded machine) dies holding them."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path

from issuer.issuer_testing import World, declaration, world
from issuer.replica_testing import (
    Replica,
    claims_of,
    issued_entries,
    ledger_entries,
    record_of,
    replicas,
)
from shared.bus import NatsSettings
from shared.events import CertificateIssued, CsrRequested
from shared.k8s.resources import ISSUED_CERTIFICATES
from support.metrics import ready_status
from support.waiting import eventually

CSRS = 300
LEASE = 3.0
"""Seconds: long enough that a living replica's renewals (every second) keep its claims on a
loaded machine, short enough that the dead replica's are taken over within the test."""
API_LATENCY = 0.3
PINNED = 2.0
"""Seconds every API request takes between the decision to kill and the kill."""
SIGNATURES = "meshtrust_issuer_signatures_total"
DISCARDED = "meshtrust_issuer_signatures_discarded_total"
TAKEN_OVER = "meshtrust_issuer_claims_taken_over_total"


async def storm(w: World) -> list[CsrRequested]:
    """CSRS requests, half from east and half from west (one key each: ECDSA P-256)."""
    requests = []
    for cluster in ("east", "west"):
        decl = await w.kube.get(ISSUED_CERTIFICATES, "istio-ca", namespace=cluster)
        agent = w.agent(cluster)
        requests += [agent.request(decl) for _ in range(CSRS // 2)]
    return requests


def with_resends(requests: list[CsrRequested]) -> list[CsrRequested]:
    """Every third request followed at once by its re-send (attempt 2, same issuance)."""
    copies = []
    for n, request in enumerate(requests):
        copies.append(request)
        if n % 3 == 0:
            again = request.data.model_copy(update={"attempt": 2})
            copies.append(request.model_copy(update={"data": again}))
    return copies


async def _claims_held_by(w: World, replica: Replica, *, after: int) -> set[str]:
    """The claims `replica` holds that were stored after revision `after`."""
    entries = await issued_entries(w)
    return {key for key in claims_of(entries, replica.name) if entries[key].revision > after}


async def ready(replica: Replica) -> bool:
    return await ready_status(replica.health.port) == 200


async def test_a_replica_killed_mid_storm_leaves_every_issuance_signed_once(
    tmp_path: Path, nats_settings: NatsSettings
) -> None:
    async with world(tmp_path, nats_settings) as w:
        await w.create(declaration("east", "istio-ca"))
        await w.create(declaration("west", "istio-ca"))
        requests = await storm(w)
        names = ("issuer-a", "issuer-b", "issuer-c")
        settings = [w.settings(name, claim_lease=LEASE) for name in names]
        async with replicas(*settings) as running:
            for replica in running.values():
                await eventually(lambda r=replica: ready(r), message=f"{replica.name} ready")
            victim, survivors = running["issuer-c"], [running["issuer-a"], running["issuer-b"]]
            w.api.faults.set_latency(API_LATENCY)
            started = time.monotonic()
            await asyncio.gather(*(w.bus.publish(r) for r in with_resends(requests)))

            await eventually(lambda: w.answers.count() >= CSRS // 4, within=60, message="a quarter")
            w.api.faults.set_latency(PINNED)
            # Claims stored from now on are pinned: their API reads start after the change.
            pinned_from = max(e.revision for e in (await issued_entries(w)).values())
            await eventually(
                lambda: _claims_held_by(w, victim, after=pinned_from),
                within=30,
                message="issuer-c holding pinned claims",
            )
            await victim.kill()
            dead_claims = claims_of(await issued_entries(w), victim.name)
            answered_at_kill = w.answers.count()
            w.api.faults.set_latency(0)

            await eventually(
                lambda: all(r.issuance in w.answers.by_issuance for r in requests),
                within=90,
                message="every issuance answered",
            )
            elapsed = time.monotonic() - started
            entries = await issued_entries(w)
            records = {key: record_of(entry) for key, entry in entries.items()}

        # Every issuance answered with its one certificate (a copy answered again by a survivor
        # after the victim sent it and died before its ack has the same serial).
        serials = {}
        for request in requests:
            answers = w.answers.by_issuance[request.issuance]
            assert all(isinstance(a, CertificateIssued) for a in answers), answers
            assert len({a.data.serial_number for a in answers}) == 1  # type: ignore[union-attr]
            serials[request.issuance] = answers[0].data.serial_number  # type: ignore[union-attr]
        # One ledger entry per issuance, the certificate that was sent.
        ledger = await ledger_entries(w)
        assert Counter(e["issuance"] for e in ledger) == Counter(list(serials))
        assert all(e["serial_number"] == serials[e["issuance"]] for e in ledger)
        # Every entry holds a record now (no claim left behind), the one sent.
        assert len(records) == CSRS
        for key, record in records.items():
            assert record is not None, f"{key} still holds a claim"
            assert record.serial_number == serials[record.issuance]
        # The survivors took over each claim the victim died with, and signed it.
        assert dead_claims, "the victim died holding claims"
        assert all(records[key].signed_by != victim.name for key in dead_claims)  # type: ignore[union-attr]
        assert sum(s.total(TAKEN_OVER) for s in survivors) == len(dead_claims)
        # No issuance signed twice: each survivor's every signature is one ledger entry of its
        # own; the victim lost at most the signatures it was making when it died.
        signed_by = Counter(e["signed_by"] for e in ledger)
        for survivor in survivors:
            assert survivor.total(SIGNATURES) == signed_by[survivor.name], survivor.name
        lost = victim.total(SIGNATURES) - signed_by[victim.name]
        assert 0 <= lost <= len(dead_claims)
        assert all(r.total(DISCARDED) == 0 for r in running.values())
        print(
            f"\nstorm: {CSRS} CSRs, 3 replicas (one killed after {answered_at_kill} answers, "
            f"holding {len(dead_claims)} claims): signatures "
            f"{ {r.name: r.total(SIGNATURES) for r in running.values()} }, "
            f"ledger entries {len(ledger)}, {elapsed:.1f} s"
        )
