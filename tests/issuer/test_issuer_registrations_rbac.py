"""A signing Secret the issuer is Forbidden to read, against an RBAC-enforcing API server
(`KubeAPI(authorization="RBAC")`), the issuer under its own ServiceAccount's token bound by
exactly deploy/management/issuer-rbac.yaml: the declaration is FAILED with what to grant (and a
look again at the sweep's pace, not a retry with backoff), and a CSR for it is denied
`SigningSecretForbidden` and acked, not redelivered. The same identity may list the
ClusterRegistrations (the Role added for them) and nothing else of meshtrust-system's objects."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from k8s.harness import crd_documents
from security.rbac_support import DEPLOY, apply, kubeconfig_of

from devstack.kubeapi import KubeAPI
from issuer.issuer_testing import SYSTEM_NAMESPACE, World, declaration, secret_body, world
from issuer.registration_testing import registration_body
from services.issuer.handlers import CsrHandler
from services.issuer.issued import ISSUED_BUCKET
from services.issuer.ledger import open_ledger
from services.issuer.reconciler import Declarations
from services.issuer.registrations import CLUSTER_REGISTRATIONS
from services.issuer.signer import SigningCAs
from shared.api.meta import ObjectKey
from shared.bus import Delivery, NatsSettings
from shared.events import DESIRED_BUCKET
from shared.k8s import EventRecorder, Forbidden, KubeClient, KubeError, RequeueAfter
from shared.k8s.resources import (
    CUSTOM_RESOURCE_DEFINITIONS,
    ISSUED_CERTIFICATES,
    NAMESPACES,
    SECRETS,
)
from support.waiting import eventually

ROTATION = "ca-rotation"
"""A signing namespace in the issuer's settings whose Secrets its RBAC does not grant."""


async def _seed(admin: KubeClient, w: World) -> dict[str, Any]:
    for doc in crd_documents():
        await admin.create(CUSTOM_RESOURCE_DEFINITIONS, doc)
    await apply(admin, [DEPLOY / "management" / "00-namespace.yaml"])
    await apply(admin, [DEPLOY / "management" / "issuer-rbac.yaml"])
    for namespace in ("east", ROTATION):
        await admin.create(
            NAMESPACES, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}
        )
    await admin.create(SECRETS, secret_body("ca", ROTATION, w.hierarchy.secret_data()))

    async def served() -> bool:
        try:
            await admin.list(ISSUED_CERTIFICATES, namespace="east", limit=1)
            await admin.list(CLUSTER_REGISTRATIONS, namespace=SYSTEM_NAMESPACE, limit=1)
        except KubeError:
            return False
        return True

    await eventually(served, message="the CRDs to be served")
    ca = [{"name": "ca", "namespace": ROTATION}]
    await admin.create(
        CLUSTER_REGISTRATIONS, registration_body("east", signingCertificateSecrets=ca)
    )
    return await admin.create(
        ISSUED_CERTIFICATES,
        declaration("east", "istio-ca", signingCertificateSecret=ca[0]),
    )


@contextlib.asynccontextmanager
async def running_informers(declarations: Declarations) -> AsyncIterator[None]:
    tasks = [
        asyncio.create_task(informer.run())
        for informer in (declarations.certificates, declarations.registrations.informer)
    ]
    try:
        await declarations.certificates.wait_synced()
        await declarations.registrations.informer.wait_synced()
        yield
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def test_a_forbidden_signing_secret_is_failed_with_what_to_grant_under_the_deploy_rbac(
    tmp_path: Path, nats_settings: NatsSettings
) -> None:
    async with (
        world(tmp_path, nats_settings) as w,
        KubeAPI(name="rbac", authorization="RBAC") as api,
        KubeClient.from_kubeconfig_dict(api.kubeconfig_dict()) as admin,
    ):
        body = await _seed(admin, w)
        settings = w.settings(signing_namespaces=(SYSTEM_NAMESPACE, ROTATION))
        async with KubeClient.from_kubeconfig_dict(await kubeconfig_of(api, "issuer")) as kube:
            # The issuer's identity: registrations listed, other Secrets refused.
            await kube.list(CLUSTER_REGISTRATIONS, namespace=SYSTEM_NAMESPACE)
            with pytest.raises(Forbidden):
                await kube.get(SECRETS, "ca", namespace=ROTATION)
            ledger = open_ledger(w.bus)
            await ledger.ensure()
            with ThreadPoolExecutor(max_workers=1) as executor:
                declarations = Declarations(
                    settings=settings,
                    kube=kube,
                    desired=await w.bus.bucket(DESIRED_BUCKET),
                    signing_cas=SigningCAs(),
                    executor=executor,
                    recorder=EventRecorder(kube, component="meshtrust-issuer"),
                )
                async with running_informers(declarations):
                    result = await declarations.reconcile_certificate(ObjectKey("east", "istio-ca"))
                    handler = CsrHandler(
                        settings=settings,
                        bus=w.bus,
                        kube=kube,
                        issued=await w.bus.bucket(ISSUED_BUCKET, history=1),
                        ledger=ledger,
                        executor=executor,
                        signing_cas=SigningCAs(),
                        declarations=declarations.certificates,
                        registrations=declarations.registrations,
                    )
                    request = w.agent("east").request(body)
                    # Returns normally: the consumer acks; no endless redelivery.
                    await handler(request, Delivery(subject="", stream_sequence=1, num_delivered=1))
        assert result == RequeueAfter(settings.sweep_interval)
        ic = await admin.get(ISSUED_CERTIFICATES, "istio-ca", namespace="east")
        assert ic["status"]["state"] == "FAILED"
        error = ic["status"]["error"]
        assert "the issuer may not read signingCertificateSecret ca-rotation/ca" in error
        assert "403 Forbidden" in error
        assert (
            'cannot get resource "secrets" in API group "" in the namespace "ca-rotation"' in error
        )
        assert "Grant the issuer's ServiceAccount get on that Secret" in error
        assert f"namespace {ROTATION}" in error
        answer = await w.answers.denied(request.issuance)
        assert answer.data.reason == "SigningSecretForbidden"
        assert "may not read signingCertificateSecret ca-rotation/ca" in answer.data.message
        assert (
            await (await w.bus.bucket(DESIRED_BUCKET)).get("east.issuedcertificates.istio-ca")
            is None
        )
