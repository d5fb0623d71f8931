"""The CertificateRotation CRD and its model (shared/api/rotations.py) agree on the spec."""

from __future__ import annotations

from typing import Any

import jsonschema
import pytest
import yaml
from deploykit import REPO
from pydantic import ValidationError

from shared.api.rotations import KIND, PLURAL, CertificateRotation, CertificateRotationSpec

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
        "waveSize": 2,
        "canary": "east",
        "approval": "Manual",
        "approvedPhase": "PropagatingNewIntermediate",
        "pauseBetweenPhases": "30s",
        "gracePeriod": "24h",
        "abort": False,
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


@pytest.mark.parametrize(
    "bad",
    [{"approval": "Sometimes"}, {"waveSize": 0}, {"gracePeriod": "1d"}, {"gracePeriod": "-1s"}],
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
