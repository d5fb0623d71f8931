"""The trust probe itself (tests/support/trust_probe.py): it passes a fleet that trusts itself
and fails on a real break (a hard cut between two roots, a dropped root while old leaves live,
a forged intermediate, a missing cacerts). The fleets are made with shared.pki, as the issuer
makes them; the probe judges them with cryptography's verifier only."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Mapping

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding

from shared.pki import (
    KeyAlgorithm,
    KeySpec,
    SigningCA,
    build_csr,
    create_root_ca,
    generate_private_key,
    load_signing_ca,
    private_key_to_pem,
    sign_intermediate,
)
from support.trust_probe import TrustProbe, retire_times, sample_continuously

NOW = dt.datetime(2026, 12, 7, 4, 0, tzinfo=dt.UTC)
HOSTS = ["spiffe://cluster.local/ns/istio-system/sa/citadel"]
ECDSA = KeySpec(algorithm=KeyAlgorithm.ECDSA, size=256)
RSA = KeySpec(algorithm=KeyAlgorithm.RSA, size=2048)
KEYS = {"east": ECDSA, "west": RSA, "north": ECDSA}
Data = dict[str, bytes]


def root(name: str) -> SigningCA:
    data = create_root_ca(
        org="probe test", common_name=name, ttl=dt.timedelta(days=30), now=NOW - dt.timedelta(1)
    )
    return load_signing_ca(data, now=NOW)


OLD, NEW = root("old root"), root("new root")


def pem(*certificates: x509.Certificate) -> bytes:
    return b"".join(c.public_bytes(Encoding.PEM) for c in certificates)


def cacerts(cluster: str, ca: SigningCA, *roots: SigningCA) -> Data:
    """A cluster's cacerts: a new key signed by `ca`, root-cert.pem holding `roots`."""
    key = generate_private_key(KEYS[cluster])
    csr = x509.load_pem_x509_csr(build_csr(key, org="meshtrust", name=cluster, hosts=HOSTS))
    issued = sign_intermediate(
        csr, ca, hosts=HOSTS, org="meshtrust", name=cluster, ttl=dt.timedelta(days=1), now=NOW
    )
    return {
        "ca-cert.pem": issued.certificate_pem,
        "ca-key.pem": private_key_to_pem(key),
        "cert-chain.pem": issued.chain_pem,
        "root-cert.pem": pem(*(r.cert for r in roots)),
    }


def later(seconds: float) -> dt.datetime:
    return NOW + dt.timedelta(seconds=seconds)


def fleet_under(ca: SigningCA, *roots: SigningCA) -> dict[str, Data]:
    return {cluster: cacerts(cluster, ca, *roots) for cluster in KEYS}


def test_a_fleet_under_one_root_trusts_itself_everywhere() -> None:
    probe = TrustProbe()
    taken = probe.sample(fleet_under(OLD, OLD), now=NOW)
    assert len(taken) == 9  # 3 intermediates x 3 clusters' roots, RSA and ECDSA alike
    assert all(s.ok and s.current for s in taken), [str(s) for s in taken]
    assert probe.failures() == []


def test_a_hard_cut_between_two_roots_fails_both_ways() -> None:
    probe = TrustProbe()
    fleet = fleet_under(OLD, OLD)
    probe.sample(fleet, now=NOW)
    fleet["east"] = cacerts("east", NEW, NEW)  # [old] -> [new] at once, as before issue 18
    probe.sample(fleet, now=later(1))
    failed = {(s.source, s.current, s.target) for s in probe.failures()}
    assert failed == {
        ("east", True, "west"),
        ("east", True, "north"),
        ("west", True, "east"),
        ("north", True, "east"),
        ("east", False, "east"),  # east's own old workloads, not restarted yet
    }
    why = next(s.why for s in probe.failures() if s.source == "east" and s.target == "west")
    assert "issued by 'new root'" in why
    assert "[old root]" in why


def staged_rotation(probe: TrustProbe, *, grace: float) -> list[tuple[str, str, dt.datetime]]:
    """Add, move, drop, one cluster at a time, each cluster finished 0.5 s after its change;
    the drop starts `grace` seconds after the last move finished. Returns the FINISHED
    reports (cluster, serial, time)."""
    fleet = fleet_under(OLD, OLD)
    finished = [(c, serial_of(d), NOW) for c, d in fleet.items()]
    t = 0.0
    probe.sample(fleet, now=later(t))
    steps: list[tuple[SigningCA, tuple[SigningCA, ...]]] = [
        (OLD, (OLD, NEW)),
        (NEW, (OLD, NEW)),
        (NEW, (NEW,)),
    ]
    for number, (ca, roots) in enumerate(steps):
        if number == 2:
            t += grace
        for cluster in KEYS:
            fleet[cluster] = cacerts(cluster, ca, *roots)
            t += 0.25
            probe.sample(fleet, now=later(t))
            t += 0.25
            finished.append((cluster, serial_of(fleet[cluster]), later(t)))
            probe.sample(fleet, now=later(t))
    return finished


def serial_of(data: Mapping[str, bytes]) -> str:
    return f"{x509.load_pem_x509_certificate(data['ca-cert.pem']).serial_number:X}"


def test_a_staged_rotation_that_waits_out_the_workloads_has_no_failure() -> None:
    probe = TrustProbe()
    finished = staged_rotation(probe, grace=5.0)
    retired = retire_times(probe, finished, lifetime=dt.timedelta(seconds=5))
    assert probe.failures(retired=retired) == [], [str(s) for s in probe.failures(retired=retired)]
    # The drop did break the old leaves: the probe saw it, and only their retirement excuses it.
    assert probe.failures() != []
    assert all(not s.current for s in probe.failures())
    assert {len(probe.sequence(c)) for c in KEYS} == {4}


def test_dropping_the_old_root_before_old_leaves_are_gone_is_caught() -> None:
    probe = TrustProbe()
    finished = staged_rotation(probe, grace=1.0)
    retired = retire_times(probe, finished, lifetime=dt.timedelta(seconds=5))
    counted = probe.failures(retired=retired)
    assert counted
    assert all(not s.current and "issued by 'old root'" in s.why for s in counted)


def test_a_forged_intermediate_under_the_root_s_name_is_refused() -> None:
    # Signed by a key that is not the old root's, under the old root's name.
    forger = load_signing_ca(
        create_root_ca(org="probe test", common_name="old root", ttl=dt.timedelta(days=30),
                       now=NOW - dt.timedelta(1)),
        now=NOW,
    )  # fmt: skip
    probe = TrustProbe()
    fleet = fleet_under(OLD, OLD)
    fleet["north"] = cacerts("north", forger, OLD)
    fleet["north"]["cert-chain.pem"] = fleet["north"]["ca-cert.pem"] + pem(OLD.cert)
    probe.sample(fleet, now=NOW)
    assert {(s.source, s.target) for s in probe.failures()} == {
        ("north", "east"),
        ("north", "west"),
        ("north", "north"),
    }


def test_a_missing_or_unreadable_cacerts_is_a_failure() -> None:
    probe = TrustProbe()
    fleet: dict[str, Data | None] = dict(fleet_under(OLD, OLD))
    fleet["west"] = None
    broken = dict(fleet_under(OLD, OLD)["north"])
    del broken["ca-key.pem"]
    fleet["north"] = broken
    probe.sample(fleet, now=NOW)
    whys = {s.source: s.why for s in probe.failures()}
    assert whys == {
        "west": "no cacerts Secret",
        "north": "unreadable cacerts: cacerts lacks ca-key.pem",
    }
    assert [s for s in probe.samples if s.ok] != []  # east still trusts itself


def test_an_expired_intermediate_fails() -> None:
    probe = TrustProbe()
    probe.sample(fleet_under(OLD, OLD), now=later(2 * 86400))
    assert len(probe.failures()) == 9


def test_a_previous_intermediate_is_verified_with_the_leaf_it_issued_last() -> None:
    probe = TrustProbe()
    fleet = fleet_under(OLD, OLD)
    probe.sample(fleet, now=NOW)
    first_leaf = probe.history["east"][0].leaf
    fleet["east"] = cacerts("east", OLD, OLD)
    probe.sample(fleet, now=later(1))
    previous = probe.history["east"][0]
    assert previous.superseded == later(1)
    assert previous.leaf == first_leaf  # not re-issued: its istiod is gone
    assert [s.ok for s in probe.samples[-12:] if s.source == "east"] == [True] * 6


def test_retire_times_wait_for_the_next_intermediate_to_finish() -> None:
    probe = TrustProbe()
    fleet = fleet_under(OLD, OLD)
    probe.sample(fleet, now=NOW)
    first = serial_of(fleet["east"])
    fleet["east"] = cacerts("east", OLD, OLD)
    probe.sample(fleet, now=later(1))
    second = serial_of(fleet["east"])
    lifetime = dt.timedelta(seconds=3)
    assert retire_times(probe, [], lifetime=lifetime) == {}
    reports = [("east", second, later(4)), ("east", second.lower(), later(2)), ("west", first, NOW)]
    assert retire_times(probe, reports, lifetime=lifetime) == {first.lower(): later(5)}


async def test_sample_continuously_samples_until_stopped_and_once_more() -> None:
    probe = TrustProbe()
    fleet = fleet_under(OLD, OLD)
    stop = asyncio.Event()
    reads = 0

    async def read() -> Mapping[str, Data | None]:
        nonlocal reads
        reads += 1
        if reads == 3:
            stop.set()
        return fleet

    rounds = await sample_continuously(probe, read, stop=stop, interval=0.001, clock=lambda: NOW)
    assert rounds == reads == 4
    assert len(probe.samples) == 4 * 9


def test_naive_time_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        TrustProbe().sample({}, now=dt.datetime(2026, 1, 1))


def test_a_ca_key_that_is_not_the_intermediate_s_fails() -> None:
    data = dict(fleet_under(OLD, OLD)["east"])
    data["ca-key.pem"] = private_key_to_pem(ec.generate_private_key(ec.SECP256R1()))
    probe = TrustProbe()
    probe.sample({"east": data}, now=NOW)
    assert [s.ok for s in probe.samples] == [False]


def test_a_root_bundle_rewritten_under_the_same_intermediate_is_used() -> None:
    probe = TrustProbe()
    fleet = fleet_under(OLD, OLD)
    probe.sample(fleet, now=NOW)
    fleet["west"] = {**fleet["west"], "root-cert.pem": pem(NEW.cert)}
    probe.sample(fleet, now=later(1))
    assert {(s.source, s.target) for s in probe.failures()} == {
        ("east", "west"),
        ("west", "west"),
        ("north", "west"),
    }
    assert len(probe.sequence("west")) == 1
