"""The CertificateRotation CRD and its model (shared/api/rotations.py) agree on the spec; the
emulated API server validates a rotation with the CRD's schema as kube-apiserver does."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import jsonschema
import pytest
import yaml
from deploykit import REPO
from pydantic import ValidationError

from shared.api import v1alpha2
from shared.api.rotations import KIND, PLURAL, CertificateRotation, CertificateRotationSpec
from shared.k8s import KubeClient, KubeError
from shared.k8s.errors import Invalid
from shared.k8s.resources import CUSTOM_RESOURCE_DEFINITIONS, NAMESPACES, Resource
from support.waiting import eventually

CRD = REPO / "deploy" / "crds" / "certificaterotations.certificates.smh.solo.io.yaml"


def _crd() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(CRD.read_text())
    return loaded


def _spec_schema() -> dict[str, Any]:
    version = _crd()["spec"]["versions"][0]
    schema: dict[str, Any] = version["schema"]["openAPIV3Schema"]["properties"]["spec"]
    return schema


def _example() -> dict[str, Any]:
    return {
        "signingCertificateSecret": {"namespace": "meshtrust-system", "name": "cacerts"},
        "newSigningCertificateSecret": {"namespace": "meshtrust-system", "name": "cacerts-2"},
        "clusters": ["east", "west"],
        "clusterSelector": {
            "matchLabels": {"env": "prod", "example.com/tier": ""},
            "matchExpressions": [
                {"key": "region", "operator": "In", "values": ["eu", "us"]},
                {"key": "zone", "operator": "NotIn", "values": ["a"]},
                {"key": "mesh", "operator": "Exists"},
                {"key": "legacy", "operator": "DoesNotExist"},
            ],
        },
        "waveSize": 2,
        "canary": "east",
        "approval": "Manual",
        "approvedPhase": "PropagatingNewIntermediate",
        "pauseBetweenPhases": "30s",
        "gracePeriod": "24h",
        "abort": False,
        "allowTrustSplit": True,
    }


def test_the_crd_names_the_kind_of_the_model() -> None:
    names = _crd()["spec"]["names"]
    assert (names["kind"], names["plural"]) == (KIND, PLURAL)
    assert "rotation" in names["shortNames"]
    assert _crd()["spec"]["versions"][0]["subresources"] == {"status": {}}


def test_the_crd_spec_fields_are_the_model_fields() -> None:
    aliases = {f.alias for f in CertificateRotationSpec.model_fields.values()}
    assert set(_spec_schema()["properties"]) == aliases
    assert set(_spec_schema()["required"]) == {
        f.alias for f in CertificateRotationSpec.model_fields.values() if f.is_required()
    }


def test_a_full_spec_passes_both_and_round_trips() -> None:
    jsonschema.Draft4Validator(_spec_schema()).validate(_example())
    rotation = CertificateRotation.from_object({"spec": _example()})
    assert rotation.spec.to_wire() == _example()


def _expression(**requirement: Any) -> dict[str, Any]:
    return {"clusterSelector": {"matchExpressions": [requirement]}}


BAD_SELECTORS = [
    _expression(key="env", operator="Equals", values=["prod"]),
    _expression(key="env", operator="in", values=["prod"]),
    _expression(key="env", operator="In"),
    _expression(key="env", operator="NotIn", values=[]),
    _expression(key="env", operator="Exists", values=["prod"]),
    _expression(key="env", operator="DoesNotExist", values=["prod"]),
    _expression(operator="Exists"),
    _expression(key="-env", operator="Exists"),
    _expression(key="env", operator="In", values=["not ok"]),
    {"clusterSelector": {"matchLabels": {"env": "not ok"}}},
]


@pytest.mark.parametrize(
    "bad",
    [
        {"approval": "Sometimes"},
        {"waveSize": 0},
        {"gracePeriod": "1d"},
        {"gracePeriod": "-1s"},
        *BAD_SELECTORS,
    ],
)
def test_bad_values_are_refused_by_the_crd_and_the_model(bad: dict[str, Any]) -> None:
    spec = _example() | bad
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft4Validator(_spec_schema()).validate(spec)
    with pytest.raises(ValidationError):
        CertificateRotation.from_object({"spec": spec})


def test_defaults_are_the_documented_ones() -> None:
    spec = CertificateRotationSpec.model_validate(
        {k: v for k, v in _example().items() if k.endswith("Secret")}
    )
    assert (spec.wave_size, spec.approval, spec.pause_between_phases, spec.grace_period) == (
        1,
        "Automatic",
        "0s",
        "24h",
    )
    assert not spec.abort


def test_an_empty_selector_is_kept_apart_from_none() -> None:
    bare = {k: v for k, v in _example().items() if k != "clusterSelector"}
    assert CertificateRotationSpec.model_validate(bare).cluster_selector is None
    every = CertificateRotationSpec.model_validate(bare | {"clusterSelector": {}})
    assert every.cluster_selector is not None
    assert every.cluster_selector.empty
    assert every.to_wire()["clusterSelector"] == {}
    jsonschema.Draft4Validator(_spec_schema()).validate(bare | {"clusterSelector": {}})


ROTATIONS = Resource(v1alpha2.GROUP, v1alpha2.VERSION, PLURAL, KIND)
NS = "meshtrust-system"


@pytest.fixture
async def kube() -> AsyncIterator[KubeClient]:
    """The emulated API server with this CRD installed and its namespace made."""
    from devstack.kubeapi import KubeAPI

    async with (
        KubeAPI(name="crd", tls=False, token=None) as api,
        KubeClient.from_kubeconfig_dict(api.kubeconfig_dict()) as client,
    ):
        await client.create(CUSTOM_RESOURCE_DEFINITIONS, _crd())
        await client.create(NAMESPACES, {"metadata": {"name": NS}})

        async def served() -> bool:
            try:
                await client.list(ROTATIONS, namespace=NS)
            except KubeError:
                return False
            return True

        await eventually(served, message="the CertificateRotation CRD to be served")
        yield client


def _body(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": v1alpha2.API_VERSION,
        "kind": KIND,
        "metadata": {"name": name, "namespace": NS},
        "spec": spec,
    }


async def test_the_api_server_takes_a_good_selector_and_refuses_a_bad_operator(
    kube: KubeClient,
) -> None:
    made = await kube.create(ROTATIONS, _body("good", _example()))
    assert made["spec"]["clusterSelector"] == _example()["clusterSelector"]
    assert CertificateRotation.from_object(made).spec.cluster_selector is not None
    bad = _example() | _expression(key="env", operator="Equals", values=["prod"])
    with pytest.raises(Invalid) as refused:
        await kube.create(ROTATIONS, _body("bad", bad))
    assert "spec.clusterSelector.matchExpressions[0].operator" in refused.value.fields
    assert "Equals" in refused.value.message


@pytest.mark.parametrize("bad", BAD_SELECTORS[2:6])
async def test_the_api_server_refuses_values_that_do_not_fit_the_operator(
    kube: KubeClient, bad: dict[str, Any]
) -> None:
    with pytest.raises(Invalid) as refused:
        await kube.create(ROTATIONS, _body("bad", _example() | bad))
    assert any(
        f.startswith("spec.clusterSelector.matchExpressions[0]") for f in refused.value.fields
    )
    assert (await kube.list(ROTATIONS, namespace=NS)).items == []
