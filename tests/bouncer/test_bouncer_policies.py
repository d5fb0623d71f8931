"""The bouncer's decisions as tables: which step comes next for an issuance, how the record
changes, when replacements count as Ready, when the root cert is synced, when a rollout is done,
and which directives are refused."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from services.bouncer import policies
from services.bouncer.policies import (
    RESTARTED_FOR,
    AwaitReady,
    Bounce,
    Finished,
    Start,
    Step,
    WaitResult,
)
from shared.api.v1alpha2 import (
    BouncedPodSet,
    PodBounceDirectiveSpec,
    PodBounceDirectiveStatus,
    PodSelector,
    RootCertSync,
)
from shared.events import BouncedSelector

X, Y = "issuance-x-0001", "issuance-y-0002"


def spec(n: int) -> PodBounceDirectiveSpec:
    return PodBounceDirectiveSpec(
        pods_to_bounce=tuple(PodSelector(namespace=f"ns{i}", labels={"app": "a"}) for i in range(n))
    )


def status(issuance: str | None, *entries: tuple[str, ...]) -> PodBounceDirectiveStatus:
    return PodBounceDirectiveStatus(
        issuance_id=issuance, pods_bounced=tuple(BouncedPodSet(bounced_pods=e) for e in entries)
    )


@pytest.mark.parametrize(
    ("selectors", "record", "confirmed", "expected"),
    [
        (2, status(None), -1, Start()),
        (2, status(Y, ("a",), ("b",)), -1, Start()),
        (2, status(X), -1, Bounce(0)),
        (0, status(X), -1, Finished()),
        (2, status(X, ("a",)), -1, AwaitReady(0)),
        (2, status(X, ("a",)), 0, Bounce(1)),
        (2, status(X, ("a",), ("b",)), -1, AwaitReady(1)),
        (2, status(X, ("a",), ("b",)), 0, AwaitReady(1)),
        (2, status(X, ("a",), ("b",)), 1, Finished()),
        (2, status(X, (), ()), 1, Finished()),
        (1, status(X, ("a",), ("b",)), 0, Finished()),
    ],
    ids=[
        "a directive never bounced starts a record for the issuance",
        "a record of another issuance is reset: a new issuance bounces everything again",
        "an empty record of this issuance bounces the first selector",
        "a directive without selectors is finished at once",
        "a resumed run confirms the last recorded selector before going on",
        "once the first selector is confirmed the second is bounced",
        "a run resuming after every deletion still confirms the last selector",
        "confirming an earlier selector is not confirming the last one",
        "every selector recorded and the last confirmed is finished",
        "selectors that matched no pods are recorded as done all the same",
        "entries beyond a shortened spec do not make up selectors",
    ],
)
def test_next_step(
    selectors: int, record: PodBounceDirectiveStatus, confirmed: int, expected: Step
) -> None:
    assert policies.next_step(spec(selectors), record, issuance=X, confirmed=confirmed) == expected


@pytest.mark.parametrize(
    ("record", "index", "pods", "expected"),
    [
        (status(X), 0, ("a", "b"), status(X, ("a", "b"))),
        (status(X, ("a",)), 1, ("c",), status(X, ("a",), ("c",))),
        (status(X, ("a",), ("old",)), 1, ("c",), status(X, ("a",), ("c",))),
        (status(X, ("a",)), 1, (), status(X, ("a",), ())),
    ],
    ids=[
        "the first selector's pods are recorded for the issuance",
        "a later selector is appended after the earlier ones",
        "recording a selector again replaces its entry and drops nothing before it",
        "a selector that matched no pods is recorded with an empty list",
    ],
)
def test_record_selector(
    record: PodBounceDirectiveStatus,
    index: int,
    pods: tuple[str, ...],
    expected: PodBounceDirectiveStatus,
) -> None:
    assert policies.record_selector(record, issuance=X, index=index, pods=pods) == expected


@pytest.mark.parametrize(
    ("record", "index"),
    [(status(Y, ("a",)), 1), (status(X), 1)],
    ids=[
        "a record another writer reset to another issuance is not written over",
        "a selector is never recorded before the ones before it",
    ],
)
def test_record_selector_refuses_an_inconsistent_record(
    record: PodBounceDirectiveStatus, index: int
) -> None:
    with pytest.raises(ValueError, match=r"selector|issuance"):
        policies.record_selector(record, issuance=X, index=index, pods=("p",))


def test_the_outcome_reports_only_the_record_of_its_own_issuance() -> None:
    assert policies.bounced_selectors(status(X, ("a",), ()), issuance=X) == (
        BouncedSelector(index=0, pods=("a",)),
        BouncedSelector(index=1, pods=()),
    )
    assert policies.bounced_selectors(status(Y, ("a",)), issuance=X) == ()


@pytest.mark.parametrize(
    ("current", "refused"),
    [(X, False), (Y, True), (None, True)],
    ids=[
        "the certificate's current issuance is bounced",
        "an issuance the certificate has moved past is refused",
        "a certificate without an issuance refuses every request",
    ],
)
def test_superseded(current: str | None, refused: bool) -> None:
    assert (policies.superseded(current=current, requested=X) is not None) == refused


def pod(
    name: str,
    *,
    ready: bool = True,
    deleting: bool = False,
    annotation: str | None = None,
    controller: tuple[str, str] | None = None,
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": "ns", "uid": f"uid-{name}"}
    if deleting:
        meta["deletionTimestamp"] = "2026-12-01T00:00:00Z"
    if annotation is not None:
        meta["annotations"] = {RESTARTED_FOR: annotation}
    if controller is not None:
        meta["ownerReferences"] = [
            {"kind": controller[0], "name": controller[1], "controller": True, "uid": "u"}
        ]
    conditions = [{"type": "Ready", "status": "True" if ready else "False"}]
    return {"metadata": meta, "status": {"conditions": conditions}}


@pytest.mark.parametrize(
    ("pods", "bounced", "wanted", "ok"),
    [
        ([pod("new-1")], ["old-1"], 1, True),
        ([pod("old-1")], ["old-1"], 1, False),
        ([pod("new-1", deleting=True)], ["old-1"], 1, False),
        ([pod("new-1", ready=False)], ["old-1"], 1, False),
        ([pod("new-1"), pod("new-2", ready=False)], ["a", "b"], 2, False),
        ([pod("new-1"), pod("new-2"), pod("new-3")], ["a", "b"], 2, True),
        ([], ["a"], 0, True),
        ([{"metadata": {"name": "bare"}}], [], 1, False),
    ],
    ids=[
        "a Ready replacement satisfies waitForReplicas 1",
        "a pod with a bounced pod's name is not a replacement",
        "a pod being deleted does not count",
        "a replacement that is not Ready yet does not count",
        "one Ready of two wanted is not enough",
        "more Ready replacements than wanted is enough",
        "waitForReplicas 0 needs nothing",
        "a pod without a status is not Ready",
    ],
)
def test_ready_replacements(
    pods: list[dict[str, Any]], bounced: list[str], wanted: int, ok: bool
) -> None:
    assert policies.ready_replacements(pods, bounced=bounced, wanted=wanted).ok is ok


def test_the_victims_are_the_live_pods_with_their_uids() -> None:
    pods = [pod("b"), pod("a"), pod("gone", deleting=True)]
    assert policies.victims(pods) == [("a", "uid-a"), ("b", "uid-b")]


SYNC = RootCertSync.model_validate(
    {
        "secretRef": {"name": "cacerts", "namespace": "istio-system"},
        "secretKey": "root-cert.pem",
        "configMapRef": {"name": "istio-ca-root-cert", "namespace": "apps"},
        "configMapKey": "root-cert.pem",
    }
)


def secret(value: str | None, *, raw: str | None = None) -> dict[str, Any]:
    data = {} if value is None else {"root-cert.pem": base64.b64encode(value.encode()).decode()}
    if raw is not None:
        data = {"root-cert.pem": raw}
    return {"metadata": {"name": "cacerts"}, "data": data}


def config_map(value: str | None) -> dict[str, Any]:
    return {
        "metadata": {"name": "istio-ca-root-cert"},
        "data": {} if value is None else {"root-cert.pem": value},
    }


@pytest.mark.parametrize(
    ("the_secret", "the_map", "ok", "says"),
    [
        (secret("ROOT\n"), config_map("ROOT\n"), True, "synced"),
        (secret("ROOT\n"), config_map("ROOT"), True, "synced"),
        (secret("NEW\n"), config_map("OLD\n"), False, "does not yet hold"),
        (secret("OLD\nNEW\n"), config_map("OLD\nNEW\n"), True, "synced"),
        (secret("OLD\nNEW\n"), config_map("OLD\n"), False, "does not yet hold"),
        (secret("NEW\n"), config_map("OLD\nNEW\n"), False, "does not yet hold"),
        (None, config_map("ROOT"), False, "Secret istio-system/cacerts not found"),
        (secret(None), config_map("ROOT"), False, "has no key root-cert.pem"),
        (secret(None, raw="%%%"), config_map("ROOT"), False, "is not base64"),
        (secret("ROOT"), None, False, "ConfigMap apps/istio-ca-root-cert not found"),
        (secret("ROOT"), config_map(None), False, "ConfigMap apps/istio-ca-root-cert has no key"),
    ],
    ids=[
        "equal contents are synced",
        "a final newline is not a difference",
        "the old root in the ConfigMap is not synced",
        "a rotation's two roots, both in the ConfigMap, are synced",
        "the old root alone while the Secret holds both is not synced",
        "both roots while the Secret holds the new one alone is not synced",
        "a missing Secret is named",
        "a Secret without the key is named",
        "a Secret value that is not base64 is named",
        "a missing ConfigMap is named",
        "a ConfigMap without the key is named",
    ],
)
def test_root_cert_synced(
    the_secret: dict[str, Any] | None, the_map: dict[str, Any] | None, ok: bool, says: str
) -> None:
    check = policies.root_cert_synced(SYNC, secret=the_secret, config_map=the_map)
    assert check.ok is ok
    assert says in check.detail


def deployment(
    *,
    annotation: str | None = X,
    generation: int = 2,
    observed: int = 2,
    replicas: int = 2,
    updated: int = 2,
    total: int = 2,
    available: int = 2,
) -> dict[str, Any]:
    template: dict[str, Any] = {"metadata": {}}
    if annotation is not None:
        template["metadata"]["annotations"] = {RESTARTED_FOR: annotation}
    return {
        "metadata": {"name": "gw", "generation": generation},
        "spec": {"replicas": replicas, "template": template},
        "status": {
            "observedGeneration": observed,
            "updatedReplicas": updated,
            "replicas": total,
            "availableReplicas": available,
        },
    }


@pytest.mark.parametrize(
    ("the_deployment", "ok", "says"),
    [
        (deployment(), True, "rolled out"),
        (None, False, "not found"),
        (deployment(annotation=None), False, "has not been restarted"),
        (deployment(annotation=Y), False, "has not been restarted"),
        (deployment(observed=1), False, "not yet observed"),
        (deployment(updated=1), False, "1 of 2 replicas updated"),
        (deployment(total=3), False, "1 old replicas still running"),
        (deployment(available=1), False, "1 of 2 replicas available"),
    ],
    ids=[
        "a restarted, observed, updated and available Deployment is rolled out",
        "a missing Deployment is not",
        "a Deployment never restarted is not",
        "a Deployment restarted for another issuance is not",
        "a restart the controller has not seen is not",
        "a rollout with replicas left to update is not",
        "a rollout with old replicas still running is not",
        "a rollout with updated replicas not yet available is not",
    ],
)
def test_rollout_complete(the_deployment: dict[str, Any] | None, ok: bool, says: str) -> None:
    check = policies.rollout_complete(the_deployment, name="gw", issuance=X)
    assert check.ok is ok
    assert says in check.detail


@pytest.mark.parametrize(
    ("pods", "wanted", "ok"),
    [
        ([pod("n1", annotation=X), pod("n2", annotation=X)], 2, True),
        ([pod("n1", annotation=X), pod("o1")], 2, False),
        ([pod("n1", annotation=Y), pod("n2", annotation=X)], 2, False),
        ([pod("n1", annotation=X, ready=False), pod("n2", annotation=X)], 2, False),
        ([], 0, True),
    ],
    ids=[
        "two Ready pods of the restarted template satisfy two",
        "a pod of the old template does not count",
        "a pod restarted for another issuance does not count",
        "a restarted pod that is not Ready does not count",
        "nothing wanted is satisfied by nothing",
    ],
)
def test_restarted_ready(pods: list[dict[str, Any]], wanted: int, ok: bool) -> None:
    assert policies.restarted_ready(pods, issuance=X, wanted=wanted).ok is ok


def test_the_pods_a_restart_rolls_are_the_live_ones_of_an_older_template() -> None:
    pods = [pod("o1"), pod("n1", annotation=X), pod("o2", annotation=Y), pod("d", deleting=True)]
    assert policies.rolled_pods(pods, issuance=X) == ["o1", "o2"]


def test_the_restart_patch_names_the_issuance_and_the_time_as_kubectl_does() -> None:
    patch = policies.restart_patch(issuance=X, now="2026-12-01T08:00:00+00:00")
    assert patch == {
        "spec": {
            "template": {
                "metadata": {
                    "annotations": {
                        RESTARTED_FOR: X,
                        "kubectl.kubernetes.io/restartedAt": "2026-12-01T08:00:00+00:00",
                    }
                }
            }
        }
    }


@pytest.mark.parametrize(
    ("obj", "expected"),
    [
        (pod("p", controller=("ReplicaSet", "gw-abc")), ("ReplicaSet", "gw-abc")),
        (pod("p"), None),
        (
            {"metadata": {"ownerReferences": [{"kind": "Node", "name": "n", "controller": False}]}},
            None,
        ),
    ],
    ids=[
        "the controlling ownerReference names the controller",
        "a bare pod has none",
        "an owner that is not the controller does not count",
    ],
)
def test_controller_of(obj: dict[str, Any], expected: tuple[str, str] | None) -> None:
    assert policies.controller_of(obj) == expected


@pytest.mark.parametrize(
    ("labels", "namespace", "problem"),
    [
        ({"app": "istiod"}, "istio-system", None),
        ({}, "istio-system", None),
        ({"app.kubernetes.io/name": "gw", "x": ""}, "apps", None),
        ({"app": "not a label!"}, "apps", "spec.podsToBounce[0].labels: label app='not a label!'"),
        ({"-app": "x"}, "apps", "label key '-app'"),
        ({"Bad_Prefix/app": "x"}, "apps", "the prefix must be a DNS-1123 subdomain"),
        ({"app": "x" * 64}, "apps", "at most 63"),
        ({"app": "x"}, "Istio_System", "spec.podsToBounce[0].namespace 'Istio_System'"),
    ],
    ids=[
        "equality labels in a namespace are fine",
        "no labels means every pod of the namespace, as in Gloo Mesh",
        "prefixed keys and empty values are valid labels",
        "a label value with spaces is refused with its field",
        "a label key starting with a dash is refused",
        "a key prefix that is not a DNS subdomain is refused",
        "a value longer than 63 characters is refused",
        "a namespace that cannot exist is refused",
    ],
)
def test_spec_problems(labels: dict[str, str], namespace: str, problem: str | None) -> None:
    found = policies.spec_problems(
        PodBounceDirectiveSpec(pods_to_bounce=(PodSelector(namespace=namespace, labels=labels),))
    )
    if problem is None:
        assert found == []
    else:
        assert any(problem in p for p in found), found


@pytest.mark.parametrize(
    ("checks", "expected"),
    [
        ([WaitResult(True, "a"), WaitResult(True, "b")], WaitResult(True, "a; b")),
        (
            [WaitResult(True, "a"), WaitResult(False, "b"), WaitResult(False, "c")],
            WaitResult(False, "b; c"),
        ),
        ([], WaitResult(True, "")),
    ],
    ids=[
        "all holding holds",
        "the failing details are what is reported",
        "nothing to check holds",
    ],
)
def test_all_of(checks: list[WaitResult], expected: WaitResult) -> None:
    assert policies.all_of(checks) == expected


def test_selectors_are_named_by_namespace_and_labels_in_errors() -> None:
    selector = PodSelector(namespace="istio-system", labels={"b": "2", "a": "1"})
    assert policies.describe(3, selector) == "selector 3 (namespace istio-system, labels a=1,b=2)"
    assert policies.label_selector(selector) == "a=1,b=2"
    everything = PodSelector(namespace="apps")
    assert policies.describe(0, everything) == "selector 0 (namespace apps, labels <every pod>)"
