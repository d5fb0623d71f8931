"""ClusterRegistrations for the tests: bodies, and the resource to create them through."""

from __future__ import annotations

from typing import Any

from issuer.issuer_testing import SIGNING_SECRET, SYSTEM_NAMESPACE
from services.issuer.registrations import CLUSTER_REGISTRATIONS
from shared.k8s import KubeClient


def registration_body(cluster: str, **spec: Any) -> dict[str, Any]:
    """East's registration as the tests' declarations fit it (`hosts_for`): its trust domain
    `<cluster>.local`, DNS under `<cluster>.svc`, the tests' signing CA; `spec` overrides."""
    body: dict[str, Any] = {
        "hosts": [f"spiffe://{cluster}.local/ns/*/sa/*", f"*.{cluster}.svc"],
        "signingCertificateSecrets": [{"name": SIGNING_SECRET, "namespace": SYSTEM_NAMESPACE}],
        "maxTTL": "2160h",
        "nameConstraints": {"trustDomain": f"{cluster}.local", "dnsSuffixes": [f"{cluster}.svc"]},
    }
    body.update(spec)
    return {
        "apiVersion": "certificates.smh.solo.io/v1alpha2",
        "kind": "ClusterRegistration",
        "metadata": {"name": cluster, "namespace": SYSTEM_NAMESPACE},
        "spec": {k: v for k, v in body.items() if v is not None},
    }


async def register(kube: KubeClient, cluster: str, **spec: Any) -> dict[str, Any]:
    return await kube.create(CLUSTER_REGISTRATIONS, registration_body(cluster, **spec))
