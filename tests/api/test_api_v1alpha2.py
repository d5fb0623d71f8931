"""The pydantic models of IssuedCertificate and PodBounceDirective, and their CRDs' schemas."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from pydantic import ValidationError

from shared.api.meta import ObjectKey
from shared.api.v1alpha2 import (
    BounceStrategy,
    CertOptions,
    IssuedCertificate,
    KeyAlgorithm,
    PodBounceDirective,
    State,
)

CRDS = Path(__file__).parents[2] / "deploy/crds"


def crd_schema(plural: str) -> dict[str, Any]:
    crd = yaml.safe_load((CRDS / f"{plural}.certificates.smh.solo.io.yaml").read_text())
    schema: dict[str, Any] = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


def issued(**spec: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "hosts": ["spiffe://cluster.local/ns/istio-system/sa/citadel"],
        "org": "solo.io",
        "signingCertificateSecret": {"name": "root-ca", "namespace": "east"},
        "issuedCertificateSecret": {"name": "cacerts", "namespace": "istio-system"},
    }
    base.update(spec)
    return {
        "apiVersion": "certificates.smh.solo.io/v1alpha2",
        "kind": "IssuedCertificate",
        "metadata": {"name": "istio", "namespace": "istio-system"},
        "spec": base,
    }


def test_an_issued_certificate_reads_camel_case_and_writes_it_back() -> None:
    raw = issued(podBounceDirective={"name": "istio", "namespace": "istio-system"})
    raw["status"] = {"observedGeneration": 3, "state": "ISSUED", "error": ""}
    ic = IssuedCertificate.from_object(raw)
    assert ic.spec.signing_certificate_secret.name == "root-ca"
    assert ic.status.state is State.ISSUED
    out = ic.to_object()
    assert out["spec"]["issuedCertificateSecret"] == {
        "name": "cacerts",
        "namespace": "istio-system",
    }
    assert out["status"]["state"] == "ISSUED", "the state travels as the enum's name"
    assert out["status"]["observedGeneration"] == 3
    assert ic.key == ObjectKey("istio-system", "istio")


def test_a_missing_status_reads_as_pending() -> None:
    ic = IssuedCertificate.from_object(issued())
    assert ic.status.state is State.PENDING
    assert ic.status.observed_generation == 0


def test_metadata_keeps_the_fields_it_does_not_model() -> None:
    raw = issued()
    raw["metadata"]["managedFields"] = [{"manager": "kubectl", "operation": "Update"}]
    raw["metadata"]["resourceVersion"] = "42"
    out = IssuedCertificate.from_object(raw).to_object()
    assert out["metadata"]["managedFields"] == [{"manager": "kubectl", "operation": "Update"}]
    assert out["metadata"]["resourceVersion"] == "42"


def test_unknown_spec_fields_are_refused() -> None:
    with pytest.raises(ValidationError, match="hostz"):
        IssuedCertificate.from_object(issued(hostz=["x"]))


def test_models_are_frozen() -> None:
    ic = IssuedCertificate.from_object(issued())
    with pytest.raises(ValidationError, match="frozen"):
        ic.spec.org = "evil"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("options", "algorithm", "size", "lifetime"),
    [
        pytest.param(
            {}, KeyAlgorithm.RSA, 4096, timedelta(days=365), id="defaults are RSA 4096 for a year"
        ),
        pytest.param(
            {"keyAlgorithm": "ECDSA"},
            KeyAlgorithm.ECDSA,
            256,
            timedelta(days=365),
            id="ECDSA defaults to P-256",
        ),
        pytest.param(
            {"keyAlgorithm": "ECDSA", "keySize": 384},
            KeyAlgorithm.ECDSA,
            384,
            timedelta(days=365),
            id="ECDSA P-384 is allowed",
        ),
        pytest.param(
            {"keySize": 2048, "ttlDays": 30},
            KeyAlgorithm.RSA,
            2048,
            timedelta(days=30),
            id="ttlDays sets the lifetime",
        ),
        pytest.param(
            {"ttlDays": 30, "ttl": "90s"},
            KeyAlgorithm.RSA,
            4096,
            timedelta(seconds=90),
            id="ttl overrides ttlDays",
        ),
    ],
)
def test_cert_options_defaults_and_lifetime(
    options: dict[str, Any], algorithm: KeyAlgorithm, size: int, lifetime: timedelta
) -> None:
    opts = IssuedCertificate.from_object(issued(certOptions=options)).spec.cert_options
    assert opts.key_algorithm is algorithm
    assert opts.key_size == size
    assert opts.lifetime == lifetime


@pytest.mark.parametrize(
    ("options", "message"),
    [
        pytest.param(
            {"keySize": 256}, "not allowed for RSA", id="an ECDSA size with RSA is refused"
        ),
        pytest.param(
            {"keyAlgorithm": "ECDSA", "keySize": 4096},
            "not allowed for ECDSA",
            id="an RSA size with ECDSA is refused",
        ),
        pytest.param({"keyAlgorithm": "DSA"}, "RSA", id="an unknown algorithm is refused"),
        pytest.param({"ttl": "1d"}, "not a duration", id="a duration with days is refused"),
        pytest.param({"ttl": "0s"}, "longer than zero", id="a zero ttl is refused"),
        pytest.param(
            {"secretRotationGracePeriodRatio": 1.0}, "less than 1", id="a ratio of one is refused"
        ),
        pytest.param({"ttlDays": 0}, "greater than or equal to 1", id="zero ttlDays is refused"),
    ],
)
def test_cert_options_refuse_what_the_crd_refuses(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        IssuedCertificate.from_object(issued(certOptions=options))


def test_renewal_starts_with_the_grace_ratio_of_the_lifetime_left() -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    end = start + timedelta(days=300)
    assert CertOptions().renewal_time(start, end) == start + timedelta(days=200)
    half = CertOptions(secret_rotation_grace_period_ratio=0.5)
    assert half.renewal_time(start, end) == start + timedelta(days=150)


def test_status_timestamps_travel_as_rfc3339() -> None:
    raw = issued()
    raw["status"] = {"state": "FINISHED", "notAfter": "2027-01-01T00:00:00Z", "failedAttempts": 0}
    out = IssuedCertificate.from_object(raw).to_object()
    assert out["status"]["notAfter"] == "2027-01-01T00:00:00Z"


def test_a_pod_bounce_directive_round_trips_with_gloo_mesh_field_names() -> None:
    raw = {
        "apiVersion": "certificates.smh.solo.io/v1alpha2",
        "kind": "PodBounceDirective",
        "metadata": {"name": "istio", "namespace": "istio-system"},
        "spec": {
            "podsToBounce": [
                {
                    "namespace": "istio-system",
                    "labels": {"app": "istiod"},
                    "waitForReplicas": 1,
                    "rootCertSync": {
                        "secretRef": {"name": "cacerts", "namespace": "istio-system"},
                        "secretKey": "root-cert.pem",
                        "configMapRef": {"name": "istio-ca-root-cert", "namespace": "istio-system"},
                        "configMapKey": "root-cert.pem",
                    },
                },
                {"namespace": "bookinfo", "strategy": "RolloutRestart"},
            ]
        },
        "status": {"podsBounced": [{"bouncedPods": ["istiod-1"]}], "issuanceId": "abc"},
    }
    pbd = PodBounceDirective.from_object(raw)
    assert pbd.spec.pods_to_bounce[0].strategy is BounceStrategy.DELETE
    assert pbd.spec.pods_to_bounce[1].strategy is BounceStrategy.ROLLOUT_RESTART
    assert pbd.status.pods_bounced[0].bounced_pods == ("istiod-1",)
    out = pbd.to_object()
    assert out["spec"]["podsToBounce"][0]["rootCertSync"]["configMapKey"] == "root-cert.pem"
    assert out["status"] == {"podsBounced": [{"bouncedPods": ["istiod-1"]}], "issuanceId": "abc"}


@pytest.mark.parametrize(
    ("obj", "plural"),
    [
        pytest.param(
            IssuedCertificate.from_object(issued()),
            "issuedcertificates",
            id="a default IssuedCertificate fits its CRD",
        ),
        pytest.param(
            IssuedCertificate.from_object(
                issued(
                    certOptions={"keyAlgorithm": "ECDSA", "keySize": 384, "ttl": "1h30m"},
                    podBounceDirective={"name": "p", "namespace": "n"},
                )
                | {
                    "status": {
                        "state": "FINISHED",
                        "notAfter": "2027-01-01T00:00:00Z",
                        "serialNumber": "0a",
                        "issuanceId": "i",
                        "failedAttempts": 2,
                    }
                }
            ),
            "issuedcertificates",
            id="a fully populated IssuedCertificate fits its CRD",
        ),
        pytest.param(
            PodBounceDirective.from_object(
                {
                    "metadata": {"name": "p"},
                    "spec": {"podsToBounce": [{"namespace": "x", "labels": {"a": "b"}}]},
                }
            ),
            "podbouncedirectives",
            id="a PodBounceDirective fits its CRD",
        ),
    ],
)
def test_what_the_models_write_the_crd_schemas_accept(
    obj: IssuedCertificate | PodBounceDirective, plural: str
) -> None:
    jsonschema.Draft4Validator(crd_schema(plural)).validate(obj.to_object())


@pytest.mark.parametrize(
    ("spec", "path"),
    [
        pytest.param({"hosts": []}, ["spec", "hosts"], id="the CRD refuses empty hosts"),
        pytest.param(
            {"certOptions": {"keyAlgorithm": "DSA"}},
            ["spec", "certOptions", "keyAlgorithm"],
            id="the CRD refuses an unknown key algorithm",
        ),
        pytest.param(
            {"certOptions": {"ttlDays": 0}},
            ["spec", "certOptions", "ttlDays"],
            id="the CRD refuses zero ttlDays",
        ),
        pytest.param(
            {"certOptions": {"ttl": "1d"}},
            ["spec", "certOptions", "ttl"],
            id="the CRD refuses a ttl in days",
        ),
        pytest.param(
            {"certOptions": {"secretRotationGracePeriodRatio": 0}},
            ["spec", "certOptions", "secretRotationGracePeriodRatio"],
            id="the CRD refuses a zero ratio",
        ),
        pytest.param(
            {"signingCertificateSecret": {"name": "x"}},
            ["spec", "signingCertificateSecret"],
            id="the CRD refuses an ObjectRef without namespace",
        ),
    ],
)
def test_the_issued_certificate_crd_refuses_invalid_specs(
    spec: dict[str, Any], path: list[str]
) -> None:
    errors = list(
        jsonschema.Draft4Validator(crd_schema("issuedcertificates")).iter_errors(issued(**spec))
    )
    assert errors, "the schema accepted an invalid object"
    assert [list(e.absolute_path)[: len(path)] for e in errors] == [path]
