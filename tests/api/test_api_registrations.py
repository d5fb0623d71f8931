"""The ClusterRegistration model and its CRD's schema: what the model writes the CRD accepts,
and the CRD refuses what the model refuses (the emulator validates with the same schema)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from pydantic import ValidationError

from shared.api.registrations import ClusterRegistration, host_pattern

CRD = Path(__file__).parents[2] / "deploy/crds/clusterregistrations.certificates.smh.solo.io.yaml"


def schema() -> dict[str, Any]:
    crd = yaml.safe_load(CRD.read_text())
    return dict(crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"])


def body(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "certificates.smh.solo.io/v1alpha2",
        "kind": "ClusterRegistration",
        "metadata": {"name": "east", "namespace": "meshtrust-system"},
        "spec": spec,
    }


FULL = {
    "hosts": ["spiffe://east.example/ns/*/sa/*", "*.east.example"],
    "signingCertificateSecrets": [{"name": "root-ca", "namespace": "meshtrust-system"}],
    "maxTTL": "720h",
    "issuance": {"perHour": 2.5, "burst": 1},
    "nameConstraints": {"trustDomain": "east.example", "dnsSuffixes": ["east.example"]},
}


@pytest.mark.parametrize("spec", [{}, FULL], ids=["empty", "full"])
def test_what_the_model_writes_the_crd_accepts(spec: dict[str, Any]) -> None:
    model = ClusterRegistration.from_object(body(**spec))
    written = model.to_object()
    assert ClusterRegistration.from_object(written) == model
    assert {k: v for k, v in written["spec"].items() if v != []} == spec
    jsonschema.Draft4Validator(schema()).validate(written)


INVALID = {
    "a zero rate": {"issuance": {"perHour": 0, "burst": 1}},
    "a zero burst": {"issuance": {"perHour": 1, "burst": 0}},
    "a maxTTL in days": {"maxTTL": "30d"},
    "an upper-case trust domain": {"nameConstraints": {"trustDomain": "East.example"}},
    "a suffix with a wildcard": {"nameConstraints": {"dnsSuffixes": ["*.east.example"]}},
    "a CA without a namespace": {"signingCertificateSecrets": [{"name": "root-ca"}]},
}


@pytest.mark.parametrize("spec", INVALID.values(), ids=INVALID.keys())
def test_the_crd_and_the_model_refuse_the_same_specs(spec: dict[str, Any]) -> None:
    assert list(jsonschema.Draft4Validator(schema()).iter_errors(body(**spec)))
    with pytest.raises(ValidationError):
        ClusterRegistration.from_object(body(**spec))


PATTERNS = [
    ("spiffe://east.example/ns/*/sa/*", "spiffe://east.example/ns/a/sa/b", True),
    ("spiffe://east.example/ns/*/sa/*", "spiffe://east.example/ns/a/b/sa/c", False),
    ("spiffe://east.example/ns/*/sa/*", "spiffe://east.example/ns//sa/b", False),
    ("*.east.example", "a.b.east.example", True),
    ("*.east.example", "east.example", False),
    ("*.east.example", "aeast.example", False),
    ("10.0.0.1", "10.0.0.1", True),
    ("10.0.0.1", "10.0.0.10", False),
    ("a.b", "axb", False),
]


@pytest.mark.parametrize(("pattern", "host", "matches"), PATTERNS)
def test_host_patterns(pattern: str, host: str, matches: bool) -> None:
    assert (host_pattern(pattern).fullmatch(host) is not None) is matches
