"""Hollow clusters: five clusters' production agents and bouncers in two processes reach
FINISHED, each through its own NATS identity and its own emulated endpoint, and re-issue."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

import pytest

from devstack.hollow.__main__ import parse_clusters
from devstack.hollow.fleet import TEMPLATE, HollowFleet, shares
from devstack.hollow.follow import Observer, declare, reissue
from devstack.stack import MGMT, status
from shared.k8s.client import KubeClient
from support.waiting import eventually

CLUSTERS = [f"hollow-{i}" for i in range(5)]


def test_clusters_are_named_by_lists_and_ranges() -> None:
    assert parse_clusters("a,east-08..east-10,b") == ("a", "east-08", "east-09", "east-10", "b")
    assert parse_clusters("c1..c3") == ("c1", "c2", "c3")
    for bad in ("", "east-3..east-1", "a,a", "Upper"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_clusters(bad)


def test_shares_are_contiguous_and_even() -> None:
    assert shares(list("abcde"), 2) == [["a", "b", "c"], ["d", "e"]]
    assert shares(list("ab"), 5) == [["a"], ["b"]]


def test_five_hollow_clusters_reach_finished_and_reissue(tmp_path: Path) -> None:
    fleet = HollowFleet(
        tmp_path / "fleet", remotes=CLUSTERS, hollow_processes=2, pod_ready_delay=0.05
    )
    try:
        info = fleet.up()
        assert status(fleet.root) == {
            "nats-server": True,
            "kubeapi-0": True,
            "issuer": True,
            "hollow-0": True,
            "hollow-1": True,
        }
        # Each cluster its own endpoint; the template served only while it was seeded.
        urls = {info.clusters[c]["url"] for c in [MGMT, *CLUSTERS]}
        assert len(urls) == len(CLUSTERS) + 1
        assert TEMPLATE not in info.clusters
        asyncio.run(_declare_and_follow(fleet))
    finally:
        fleet.down(purge=True)


async def _declare_and_follow(fleet: HollowFleet) -> None:
    observer = Observer({c: fleet.kubeconfig(c) for c in CLUSTERS}, fleet.kubeconfig(MGMT))
    async with KubeClient.from_kubeconfig(fleet.kubeconfig(MGMT)) as mgmt, observer.running():
        for cluster in CLUSTERS:
            await declare(mgmt, cluster)
        await eventually(
            lambda: observer.finished(CLUSTERS, besides={}), within=120, interval=0.1,
            message="every hollow cluster FINISHED",
        )  # fmt: skip
        first = {c: observer.remote.serials(c) for c in CLUSTERS}
        assert all(len(serials) == 1 for serials in first.values())
        # Each cluster's own certificate, and the issuer mirrored each one into mgmt.
        assert len(set.union(*first.values())) == len(CLUSTERS)
        await eventually(
            lambda: all(first[c] <= observer.mirror.serials(c) for c in CLUSTERS),
            within=60, interval=0.1, message="mgmt mirrors every FINISHED",
        )  # fmt: skip
        for cluster in CLUSTERS:
            await reissue(mgmt, cluster, ttl_days=364)
        await eventually(
            lambda: observer.finished(CLUSTERS, besides=first), within=120, interval=0.1,
            message="every hollow cluster re-issued",
        )  # fmt: skip
