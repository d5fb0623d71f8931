"""The desired-state applier's decisions as tables, no I/O: (entry, objects seen) -> actions,
one sentence per row; then `converge` on the object read fresh, and the bodies written."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from services.agent.desired_plan import (
    Action,
    Compare,
    Create,
    Delete,
    KeepUnreadable,
    LeaveAlone,
    Refuse,
    Replace,
    converge,
    create_body,
    differs,
    plan,
    replace_body,
)
from services.agent.objects import (
    DECLARATION_GENERATION,
    DECLARATION_UID,
    DESIRED_KEY,
    MANAGED_BY,
    MANAGED_BY_VALUE,
    SIGNING_CHAIN,
)
from shared.api.meta import Obj
from shared.events import DesiredKind, DesiredObject, desired_key

KEY = desired_key("east", DesiredKind.ISSUED_CERTIFICATE, "istio-ca")
SPEC: dict[str, Any] = {
    "hosts": ["spiffe://cluster.local/ns/istio-system/sa/citadel"],
    "org": "meshtrust",
    "signingCertificateSecret": {"name": "root", "namespace": "east"},
    "issuedCertificateSecret": {"name": "cacerts", "namespace": "istio-system"},
}


def entry(namespace: str = "istio-system", **changes: Any) -> DesiredObject:
    values: dict[str, Any] = {
        "cluster": "east",
        "kind": DesiredKind.ISSUED_CERTIFICATE,
        "name": "istio-ca",
        "namespace": namespace,
        "uid": "uid-1",
        "generation": 1,
        "spec": SPEC,
        **changes,
    }
    return DesiredObject(**values)


DESIRED = entry()


def obj(
    namespace: str = "istio-system",
    *,
    managed: bool = True,
    spec: dict[str, Any] | None = None,
    annotations: dict[str, str] | None = None,
    labels: dict[str, str] | None = None,
) -> Obj:
    """An IssuedCertificate as the cluster holds it; managed ones carry exactly what DESIRED
    declares unless told otherwise."""
    notes = (
        {DECLARATION_UID: "uid-1", DECLARATION_GENERATION: "1", DESIRED_KEY: KEY} if managed else {}
    )
    return {
        "metadata": {
            "name": "istio-ca",
            "namespace": namespace,
            "uid": f"uid-{namespace}",
            "resourceVersion": "7",
            "labels": {
                **({MANAGED_BY: MANAGED_BY_VALUE} if managed else {}),
                **(labels or {}),
            },
            "annotations": {**notes, **(annotations or {})},
        },
        "spec": spec if spec is not None else dict(SPEC),
        "status": {"state": "FINISHED"},
    }


HERE = obj()
ELSEWHERE = obj("old-place")
HAND_MADE = obj(managed=False)


@dataclass(frozen=True)
class Row:
    desired: DesiredObject | None
    cached: list[Obj] = field(default_factory=list)
    expected: list[Action] = field(default_factory=list)
    unreadable: str | None = None
    namespaces: frozenset[str] = frozenset()


PLAN = {
    "a new entry not even in the cache is created at once, without a read": Row(
        DESIRED, expected=[Create(DESIRED, first=True)]
    ),
    "an entry whose object the cache has is read and compared": Row(
        DESIRED, cached=[HERE], expected=[Compare(DESIRED)]
    ),
    "an unmanaged object of that name in the cache is read and compared too": Row(
        DESIRED, cached=[HAND_MADE], expected=[Compare(DESIRED)]
    ),
    "an entry that moved deletes the managed copy elsewhere, then creates": Row(
        DESIRED, cached=[ELSEWHERE], expected=[Delete(ELSEWHERE), Create(DESIRED, first=True)]
    ),
    "an unmanaged object elsewhere is never deleted": Row(
        DESIRED,
        cached=[obj("old-place", managed=False)],
        expected=[Create(DESIRED, first=True)],
    ),
    "an absent entry deletes the managed object": Row(None, cached=[HERE], expected=[Delete(HERE)]),
    "an absent entry deletes every managed copy, in any namespace": Row(
        None, cached=[HERE, ELSEWHERE], expected=[Delete(HERE), Delete(ELSEWHERE)]
    ),
    "an absent entry leaves an unmanaged object alone": Row(None, cached=[HAND_MADE]),
    "an absent entry with nothing in the cluster does nothing": Row(None),
    "an unreadable entry with no good value leaves the managed object as it is": Row(
        None,
        cached=[HERE],
        unreadable="SchemaMismatch: junk",
        expected=[KeepUnreadable("SchemaMismatch: junk")],
    ),
    "an unreadable entry with nothing managed does nothing, and says nothing": Row(
        None, cached=[HAND_MADE], unreadable="SchemaMismatch: junk"
    ),
    "an entry in a namespace the agent does not watch is refused": Row(
        entry("elsewhere"),
        namespaces=frozenset({"istio-system"}),
        expected=[
            Refuse(
                entry("elsewhere"),
                "namespace 'elsewhere' is not watched by the agent of cluster 'east'",
            )
        ],
    ),
    "a refused move still deletes the managed copy it left behind": Row(
        entry("elsewhere"),
        cached=[HERE],
        namespaces=frozenset({"istio-system"}),
        expected=[
            Delete(HERE),
            Refuse(
                entry("elsewhere"),
                "namespace 'elsewhere' is not watched by the agent of cluster 'east'",
            ),
        ],
    ),
    "an entry in a watched namespace is applied": Row(
        DESIRED, namespaces=frozenset({"istio-system"}), expected=[Create(DESIRED, first=True)]
    ),
}


@pytest.mark.parametrize("row", PLAN.values(), ids=PLAN.keys())
def test_plan(row: Row) -> None:
    actions = plan(
        desired=row.desired,
        unreadable=row.unreadable,
        cached=row.cached,
        namespaces=row.namespaces,
        cluster="east",
    )
    assert actions == row.expected


CONVERGE: dict[str, tuple[Obj | None, list[Action]]] = {
    "absent when read is created (a create that may race)": (None, [Create(DESIRED)]),
    "a managed object as declared is left as it is": (HERE, []),
    "an unmanaged object is left alone, with a warning": (HAND_MADE, [LeaveAlone(HAND_MADE)]),
    "a spec edited by hand is replaced": (
        obj(spec={**SPEC, "org": "hand-made"}),
        [Replace(obj(spec={**SPEC, "org": "hand-made"}), DESIRED)],
    ),
    "a spec with the API server's defaults filled in is as declared": (
        obj(spec={**SPEC, "certOptions": {"ttlDays": 365}}),
        [],
    ),
    "a changed declaration-generation annotation is replaced": (
        obj(annotations={DECLARATION_GENERATION: "0"}),
        [Replace(obj(annotations={DECLARATION_GENERATION: "0"}), DESIRED)],
    ),
    "a signing-chain fingerprint no longer declared is replaced": (
        obj(annotations={SIGNING_CHAIN: "a" * 64}),
        [Replace(obj(annotations={SIGNING_CHAIN: "a" * 64}), DESIRED)],
    ),
    "someone else's labels and annotations do not count": (
        obj(labels={"team": "mesh"}, annotations={"meshtrust.io/verdict": "{}"}),
        [],
    ),
}


@pytest.mark.parametrize(("current", "expected"), CONVERGE.values(), ids=CONVERGE.keys())
def test_converge(current: Obj | None, expected: list[Action]) -> None:
    assert converge(KEY, DESIRED, current) == expected


def test_a_new_signing_chain_fingerprint_differs_and_is_written() -> None:
    chained = entry(signing_chain_fingerprint="b" * 64)
    assert differs(KEY, HERE, chained)
    assert create_body(KEY, chained)["metadata"]["annotations"][SIGNING_CHAIN] == "b" * 64


def test_the_created_body_is_labelled_annotated_and_in_the_entrys_namespace() -> None:
    body = create_body(KEY, DESIRED)
    assert body["kind"] == "IssuedCertificate"
    assert body["metadata"] == {
        "name": "istio-ca",
        "namespace": "istio-system",
        "labels": {MANAGED_BY: MANAGED_BY_VALUE},
        "annotations": {DECLARATION_UID: "uid-1", DECLARATION_GENERATION: "1", DESIRED_KEY: KEY},
    }
    assert body["spec"] == SPEC


def test_a_replacement_keeps_status_and_others_metadata_and_drops_a_stale_fingerprint() -> None:
    current = obj(
        spec={**SPEC, "org": "hand-made"},
        labels={"team": "mesh"},
        annotations={"meshtrust.io/verdict": "{}", SIGNING_CHAIN: "a" * 64},
    )
    body = replace_body(KEY, current, entry(generation=2))
    meta = body["metadata"]
    assert body["status"] == {"state": "FINISHED"}
    assert meta["resourceVersion"] == "7"
    assert meta["labels"] == {MANAGED_BY: MANAGED_BY_VALUE, "team": "mesh"}
    assert meta["annotations"] == {
        "meshtrust.io/verdict": "{}",
        DECLARATION_UID: "uid-1",
        DECLARATION_GENERATION: "2",
        DESIRED_KEY: KEY,
    }
    assert body["spec"] == SPEC
