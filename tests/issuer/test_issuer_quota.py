"""The per-cluster issuance token bucket, as a table over an injected clock."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from issuer.issuer_testing import declaration, running, world
from issuer.test_issuer_signing import declared, ledger_entries
from services.issuer.issued import ISSUED_BUCKET
from services.issuer.quota import IssuanceQuota
from shared.bus import NatsSettings
from shared.events import CertificateDenied, CertificateIssued
from support.waiting import eventually

T0 = dt.datetime(2026, 6, 1, 12, 0, tzinfo=dt.UTC)


def at(seconds: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


# Each row: (per_hour, burst, [(cluster, seconds after T0), ...], the outcome of each take:
# None for a token taken, else the seconds after T0 at which the next token is there).
CASES: dict[str, tuple[float, int, list[tuple[str, float]], list[float | None]]] = {
    "a fresh cluster gets its whole burst at once, then waits for one token": (
        10, 5, [("east", 0)] * 6, [None, None, None, None, None, 360.0],
    ),
    "a token comes back after 3600 / per_hour seconds": (
        10, 5, [("east", 0)] * 5 + [("east", 359), ("east", 360)], [None] * 5 + [360.0, None],
    ),
    "a denied take costs nothing: the retry time does not move": (
        10, 1, [("east", 0), ("east", 10), ("east", 20)], [None, 360.0, 360.0],
    ),
    "a partly refilled bucket says when the rest of its token is there": (
        10, 1, [("east", 0), ("east", 180)], [None, 360.0],
    ),
    "an idle cluster refills only up to its burst": (
        10, 2, [("east", 0)] * 2 + [("east", 86400)] * 3, [None, None, None, None, 86760.0],
    ),
    "clusters have buckets of their own": (
        10, 1, [("east", 0), ("east", 0), ("west", 0)], [None, 360.0, None],
    ),
    "a clock that goes back refills nothing": (
        3600, 1, [("east", 100), ("east", 0), ("east", 100.5)], [None, 101.0, 101.0],
    ),
}  # fmt: skip


@pytest.mark.parametrize(("per_hour", "burst", "takes", "outcomes"), CASES.values(), ids=CASES)
def test_issuance_quota(
    per_hour: float, burst: int, takes: list[tuple[str, float]], outcomes: list[float | None]
) -> None:
    quota = IssuanceQuota(per_hour=per_hour, burst=burst)
    got = [quota.take(cluster, at(seconds)) for cluster, seconds in takes]
    expected = [None if o is None else at(o) for o in outcomes]
    assert [None if g is None else g.replace(microsecond=0) for g in got] == [
        None if e is None else e.replace(microsecond=0) for e in expected
    ]


@pytest.mark.parametrize(("per_hour", "burst"), [(0, 5), (10, 0), (-1, 1)])
def test_an_impossible_quota_is_refused(per_hour: float, burst: int) -> None:
    with pytest.raises(ValueError, match="per_hour > 0 and burst >= 1"):
        IssuanceQuota(per_hour=per_hour, burst=burst)


async def test_a_cluster_over_its_burst_is_denied_rate_limited_and_others_are_still_signed(
    tmp_path: Path, nats_settings: NatsSettings
) -> None:
    # One token an hour: nothing refills while the test runs.
    async with (
        world(tmp_path, nats_settings) as w,
        running(w.settings(issuance_burst=3, issuance_per_hour=1)),
    ):
        east_decl = await declared(w, declaration("east", "istio-ca"))
        west_decl = await declared(w, declaration("west", "istio-ca"))
        east, west = w.agent("east"), w.agent("west")
        asked = [await east.send(east.request(east_decl)) for _ in range(7)]
        west_request = await west.send(west.request(west_decl))

        answers = [await w.answers.one(r.issuance) for r in asked]
        issued = [a for a in answers if isinstance(a, CertificateIssued)]
        denied = [a for a in answers if isinstance(a, CertificateDenied)]
        assert len(issued) == 3
        assert len(denied) == 4
        for answer in denied:
            assert answer.data.reason == "RateLimited"
            assert answer.data.retry_after is not None
            # The next token is an hour away (give or take the test's own duration).
            assert answer.data.retry_after > answer.time + dt.timedelta(minutes=55)
            assert "cluster east is over its issuance rate" in answer.data.message
        await w.answers.issued(west_request.issuance)  # west's bucket is its own

        # Sending a signed issuance again is answered from its record: no token, same serial.
        first = next(
            r for r in asked if isinstance(w.answers.by_issuance[r.issuance][0], CertificateIssued)
        )
        again = await east.send(
            first.model_copy(update={"data": first.data.model_copy(update={"attempt": 2})})
        )
        answered = await eventually(
            lambda: (
                len(w.answers.by_issuance[again.issuance]) >= 2
                and w.answers.by_issuance[again.issuance][1]
            ),
            message="the re-send's answer",
        )
        assert isinstance(answered, CertificateIssued)
        assert (
            answered.data.serial_number
            == w.answers.by_issuance[again.issuance][0].data.serial_number
        )

        entries = await ledger_entries(w)
        assert sorted(e["cluster"] for e in entries) == ["east"] * 3 + ["west"]
        records = await w.bus.bucket(ISSUED_BUCKET, history=1)
        assert len([k for k in await records.keys() if k.startswith("east.")]) == 3
