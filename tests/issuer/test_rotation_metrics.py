"""The rotations' metrics: read from the informer's cache when scraped."""

from __future__ import annotations

from typing import Any, cast

from prometheus_client import CollectorRegistry

from services.issuer.metrics import IssuerMetrics
from shared.k8s.informer import Informer


class Cache:
    """What the collector reads of an informer: its items."""

    def __init__(self, *items: dict[str, Any]) -> None:
        self.objects = list(items)

    def items(self) -> list[dict[str, Any]]:
        return self.objects


def rotation(name: str, status: dict[str, Any]) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "meshtrust-system"}, "status": status}


def test_phase_paused_and_clusters_by_state_follow_the_cache() -> None:
    cache = Cache(
        rotation(
            "to-2027",
            {
                "phase": "AddingNewRoot",
                "paused": True,
                "clusters": [
                    {"name": "east", "state": "Done"},
                    {"name": "west", "state": "Failed"},
                    {"name": "north", "state": "Done"},
                ],
            },
        ),
        rotation("fresh", {}),
    )
    registry = CollectorRegistry()
    IssuerMetrics(registry, rotations=cast(Informer, cache))
    value = registry.get_sample_value
    assert (
        value("meshtrust_issuer_rotation_phase", {"rotation": "to-2027", "phase": "AddingNewRoot"})
        == 1
    )
    assert value("meshtrust_issuer_rotation_phase", {"rotation": "fresh", "phase": "Pending"}) == 1
    assert value("meshtrust_issuer_rotation_paused", {"rotation": "to-2027"}) == 1
    assert value("meshtrust_issuer_rotation_paused", {"rotation": "fresh"}) == 0
    assert (
        value("meshtrust_issuer_rotation_clusters", {"rotation": "to-2027", "state": "Done"}) == 2
    )
    assert (
        value("meshtrust_issuer_rotation_clusters", {"rotation": "to-2027", "state": "Failed"}) == 1
    )
    cache.objects = [rotation("to-2027", {"phase": "Succeeded"})]
    assert (
        value("meshtrust_issuer_rotation_phase", {"rotation": "to-2027", "phase": "AddingNewRoot"})
        is None
    )
    assert (
        value("meshtrust_issuer_rotation_phase", {"rotation": "to-2027", "phase": "Succeeded"}) == 1
    )
    assert (
        value("meshtrust_issuer_rotation_phase", {"rotation": "fresh", "phase": "Pending"}) is None
    )
