"""Every manifest under deploy/ is a valid Kubernetes object.

Built-in kinds are validated by `kubernetes-validate` (strict: unknown fields are errors)
against Kubernetes 1.37, the newest version it ships schemas for. It has no schemas for custom
resources and cannot read CRDs, so for our two kinds (and only those, listed in CUSTOM_KINDS)
the test validates instead against the `openAPIV3Schema` of deploy/crds/ with `jsonschema`;
test_apply.py also applies them to the emulator, which enforces the same CRD schemas.
"""

from __future__ import annotations

from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from deploykit import REPO, Document, all_documents, documents, manifest_files
from kubernetes_validate.utils import SchemaNotFoundError

KUBERNETES = "1.37.0"
CUSTOM_KINDS = {"IssuedCertificate", "PodBounceDirective"}
"""Validated against our CRDs instead: kubernetes-validate has no schema for them."""

DOCUMENTS = all_documents()


def _crd_schemas() -> dict[tuple[str, str], dict[str, Any]]:
    schemas = {}
    for path in sorted((REPO / "deploy" / "crds").glob("*.yaml")):
        crd = yaml.safe_load(path.read_text())
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            schemas[(f"{group}/{version['name']}", kind)] = version["schema"]["openAPIV3Schema"]
    return schemas


def test_every_directory_of_deploy_has_manifests() -> None:
    folders = {path.parent.name for path in manifest_files()}
    assert {"crds", "examples", "management", "remote"} <= folders


def test_the_cluster_placeholder_is_rendered_before_validation() -> None:
    examples = [d for d in DOCUMENTS if d.path.parent.name == "examples"]
    assert [d for d in examples if "CLUSTER" in yaml.safe_dump(d.body)] == []
    # ...and only the examples: elsewhere CLUSTER is part of names, never a placeholder.
    agent = next(d for d in DOCUMENTS if d.name == "meshtrust-agent" and d.kind == "Deployment")
    assert "MESHTRUST_AGENT_CLUSTER" in yaml.safe_dump(agent.body)
    declarations = documents(REPO / "deploy" / "examples" / "declarations.yaml", cluster="west")
    assert {doc.namespace for doc in declarations if doc.kind != "Namespace"} == {"west"}


@pytest.mark.parametrize("doc", [d for d in DOCUMENTS if d.kind not in CUSTOM_KINDS], ids=str)
def test_builtin_kinds_validate_strictly(doc: Document) -> None:
    try:
        version = kubernetes_validate.validate(doc.body, KUBERNETES, strict=True)
    except kubernetes_validate.ValidationError as exc:
        pytest.fail(f"{doc}: {'.'.join(map(str, exc.path))}: {exc.message}")
    assert version.startswith("1.37")


def test_the_validator_rejects_what_it_should() -> None:
    # Guards the test above: a typo'd field fails strict validation, and our custom kinds
    # really are unknown to the tool (else they should be validated by it, not skipped).
    deployment = next(d for d in DOCUMENTS if d.kind == "Deployment").body
    broken = yaml.safe_load(yaml.safe_dump(deployment))
    broken["spec"]["template"]["spec"]["containers"][0]["securityContex"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES, strict=True)
    custom = next(d for d in DOCUMENTS if d.kind in CUSTOM_KINDS).body
    with pytest.raises(SchemaNotFoundError):
        kubernetes_validate.validate(custom, KUBERNETES, strict=True)


@pytest.mark.parametrize("doc", [d for d in DOCUMENTS if d.kind in CUSTOM_KINDS], ids=str)
def test_custom_resources_validate_against_our_crds(doc: Document) -> None:
    schema = _crd_schemas()[(doc.body["apiVersion"], doc.kind)]
    # OpenAPI v3.0 schemas (boolean exclusiveMaximum...) are JSON Schema draft 4 in that respect.
    jsonschema.Draft4Validator(schema["properties"]["spec"]).validate(doc.body.get("spec") or {})


def test_a_custom_resource_with_a_wrong_field_type_fails_the_crd_schema() -> None:
    doc = next(d for d in DOCUMENTS if d.kind == "IssuedCertificate")
    schema = _crd_schemas()[(doc.body["apiVersion"], doc.kind)]["properties"]["spec"]
    spec = {**doc.body["spec"], "hosts": "not-a-list"}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft4Validator(schema).validate(spec)
