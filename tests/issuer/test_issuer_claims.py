"""Issuance claims (services/issuer/claims.py): the decision as a table, and over a real
nats-server and the emulated management cluster: a copy waits while another replica holds the
claim (and signs nothing), a dead holder's claim is taken over after its lease, a denial leaves
no claim behind."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from issuer.issuer_testing import World, declaration, world
from issuer.replica_testing import issued_bucket, ledger_entries, record_of, replicas
from services.issuer.claims import Answered, Take, Wait, claim_step
from services.issuer.issued import IssuanceClaim, IssuedRecord
from shared.bus import NatsSettings, RevisionMismatch
from shared.events import CertificateDenied, CertificateIssued, CsrRequested
from shared.k8s.resources import ISSUED_CERTIFICATES
from support.waiting import eventually

NOW = dt.datetime(2026, 12, 7, 12, 0, tzinfo=dt.UTC)
LEASE = 10.0
SIGNATURES = "meshtrust_issuer_signatures_total"
WAITS = "meshtrust_issuer_claim_waits_total"
TAKEN_OVER = "meshtrust_issuer_claims_taken_over_total"
DISCARDED = "meshtrust_issuer_signatures_discarded_total"


def claim(holder: str, *, left: float) -> IssuanceClaim:
    return IssuanceClaim(
        claimed_by=holder, claimed_at=NOW, lease_until=NOW + dt.timedelta(seconds=left)
    )


RECORD = IssuedRecord(
    cluster="east",
    name="istio-ca",
    issuance="i1",
    declaration_uid="uid",
    declaration_generation=1,
    csr_sha256="00",
    serial_number="01",
    certificate_pem="",
    ca_chain_pem="",
    root_cert_pem="",
    not_before=NOW,
    not_after=NOW,
    signing_ca_fingerprint="ff",
    signed_by="issuer-b",
    signed_at=NOW,
)


@pytest.mark.parametrize(
    ("found", "step"),
    [
        (RECORD, Answered()),
        (None, Take("unreadable")),
        (claim("issuer-a", left=5), Take("ours", "issuer-a")),
        (claim("issuer-b", left=0), Take("expired", "issuer-b")),
        (claim("issuer-b", left=-30), Take("expired", "issuer-b")),
        (claim("issuer-b", left=2), Wait("issuer-b", 2.0)),
        (claim("issuer-b", left=9), Wait("issuer-b", LEASE / 3)),
        (claim("issuer-b", left=0.001), Wait("issuer-b", 0.05)),
    ],
    ids=[
        "a readable record answers the issuance",
        "an unreadable entry is replaced",
        "a claim of this replica's name is no living copy's: taken",
        "a claim whose lease just ended is taken over",
        "a claim long expired is taken over",
        "a running claim makes the copy wait until its lease ends",
        "a wait is at most a third of the lease, when the holder renews",
        "a claim about to end is looked at again soon, not at once",
    ],
)
def test_what_a_replica_does_with_an_issuances_entry(
    found: IssuedRecord | IssuanceClaim | None, step: object
) -> None:
    assert claim_step(found, me="issuer-a", now=NOW, lease=LEASE) == step


async def _plant(w: World, request: CsrRequested, holder: str, *, left: float) -> None:
    """A claim of `holder` on the request's issuance, as a replica mid-signature leaves it."""
    now = dt.datetime.now(dt.UTC)
    planted = IssuanceClaim(
        claimed_by=holder, claimed_at=now, lease_until=now + dt.timedelta(seconds=left)
    )
    bucket = await issued_bucket(w)
    await bucket.create(f"east.{request.issuance}", planted.model_dump_json().encode())


async def test_a_copy_waits_while_another_replica_holds_the_claim_and_signs_nothing(
    tmp_path: Path, nats_settings: NatsSettings
) -> None:
    async with world(tmp_path, nats_settings) as w:
        decl = await w.create(declaration("east", "istio-ca"))
        east = w.agent("east")
        request = east.request(decl)
        await _plant(w, request, "issuer-b", left=3600)
        async with replicas(w.settings("issuer-a", claim_lease=1.0)) as running:
            a = running["issuer-a"]
            await east.send(request)
            # it came back (a nak with a delay) and found the claim again: twice, no signature
            await eventually(lambda: a.total(WAITS) >= 2, message="two waits")
            assert a.total(SIGNATURES) == 0
            assert request.issuance not in w.answers.by_issuance
            # the holder ends without a record (a denial deletes its claim): the copy goes on
            bucket = await issued_bucket(w)
            await bucket.delete(f"east.{request.issuance}")
            await w.answers.issued(request.issuance)
            assert a.total(SIGNATURES) == 1
            assert a.total(TAKEN_OVER) == 0
        assert [e["signed_by"] for e in await ledger_entries(w)] == ["issuer-a"]


async def test_a_dead_replicas_claim_is_taken_over_after_its_lease_and_signed_once(
    tmp_path: Path, nats_settings: NatsSettings
) -> None:
    async with world(tmp_path, nats_settings) as w:
        decl = await w.create(declaration("east", "istio-ca"))
        east = w.agent("east")
        request = east.request(decl)
        await _plant(w, request, "issuer-gone", left=2.0)  # never renewed: its holder is gone
        async with replicas(w.settings("issuer-a", claim_lease=1.0)) as running:
            a = running["issuer-a"]
            await east.send(request)
            answer = await w.answers.issued(request.issuance)
            assert a.total(WAITS) >= 1, "it waited for the lease rather than signing at once"
            assert a.total(TAKEN_OVER) == 1
            assert a.total(SIGNATURES) == 1
            assert a.total(DISCARDED) == 0
            record = record_of(await (await issued_bucket(w)).get(f"east.{request.issuance}"))
            assert record is not None
            assert record.signed_by == "issuer-a"
            assert record.serial_number == answer.data.serial_number
        entries = await ledger_entries(w)
        assert [(e["issuance"], e["signed_by"]) for e in entries] == [
            (request.issuance, "issuer-a")
        ]


async def test_a_claim_of_this_replicas_own_name_from_an_earlier_life_is_taken_at_once(
    tmp_path: Path, nats_settings: NatsSettings
) -> None:
    async with world(tmp_path, nats_settings) as w:
        decl = await w.create(declaration("east", "istio-ca"))
        east = w.agent("east")
        request = east.request(decl)
        await _plant(w, request, "issuer-a", left=3600)  # the pod restarted under its name
        async with replicas(w.settings("issuer-a", claim_lease=1.0)) as running:
            await east.send(request)
            await w.answers.issued(request.issuance)
            assert running["issuer-a"].total(WAITS) == 0
            assert running["issuer-a"].total(SIGNATURES) == 1


async def test_a_denied_csr_leaves_no_claim_and_is_signed_once_its_declaration_exists(
    tmp_path: Path, nats_settings: NatsSettings
) -> None:
    async with world(tmp_path, nats_settings) as w:
        body = declaration("east", "istio-ca")
        east = w.agent("east")
        early = east.request(body)
        async with replicas(w.settings("issuer-a"), w.settings("issuer-b")) as running:
            await east.send(early)
            assert isinstance(await w.answers.one(early.issuance), CertificateDenied)
            bucket = await issued_bucket(w)
            assert await bucket.get(f"east.{early.issuance}") is None  # released, not left
            created = await w.create(body)
            await w.kube.get(ISSUED_CERTIFICATES, "istio-ca", namespace="east")
            again = early.model_copy(
                update={
                    "data": early.data.model_copy(
                        update={"attempt": 2, "declaration_uid": created["metadata"]["uid"]}
                    )
                }
            )
            await east.send(again)
            await eventually(lambda: len(w.answers.by_issuance[early.issuance]) == 2)
            assert isinstance(w.answers.by_issuance[early.issuance][1], CertificateIssued)
            assert sum(r.total(SIGNATURES) for r in running.values()) == 1


async def test_a_delete_with_a_stale_revision_is_refused(
    tmp_path: Path, nats_settings: NatsSettings
) -> None:
    async with world(tmp_path, nats_settings) as w:
        bucket = await w.bus.bucket("test-claims", history=1)
        first = await bucket.create("east.i1", b"claim 1")
        second = await bucket.update("east.i1", b"claim 2", last=first)
        with pytest.raises(RevisionMismatch):
            await bucket.delete("east.i1", last=first)
        entry = await bucket.get("east.i1")
        assert entry is not None
        assert entry.value == b"claim 2"
        await bucket.delete("east.i1", last=second)
        assert await bucket.get("east.i1") is None
        await bucket.create("east.i1", b"claim 3")  # a deleted key can be claimed again
