"""Signing CA scope: only CA Secrets in the issuer's signing namespaces sign; a declaration naming
another is FAILED, never published, and its CSRs are denied; a signing Secret the issuer may not
read (403) is FAILED with what to grant, not retried like an outage."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from issuer.issuer_testing import (
    SIGNING_SECRET,
    SYSTEM_NAMESPACE,
    Hierarchy,
    World,
    declaration,
    running,
    secret_body,
    world,
)
from issuer.test_issuer_signing import handled_once, ledger_entries
from services.issuer.reconciler import Declarations
from services.issuer.settings import IssuerSettings
from services.issuer.signer import SigningCAs
from shared.api.meta import ObjectKey
from shared.api.v1alpha2 import IssuedCertificate
from shared.bus import NatsSettings
from shared.events import DESIRED_BUCKET
from shared.k8s import EventRecorder, Forbidden, KubeClient, RequeueAfter
from shared.k8s.resources import ISSUED_CERTIFICATES, SECRETS, Resource
from support.waiting import eventually


def test_the_signing_namespaces_are_a_list_and_the_single_value_form_still_works(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MESHTRUST_ISSUER_SIGNING_NAMESPACE", "meshtrust-system")
    assert IssuerSettings().signing_namespaces == ("meshtrust-system",)
    monkeypatch.setenv("MESHTRUST_ISSUER_SIGNING_NAMESPACES", "meshtrust-system, ca-rotation")
    settings = IssuerSettings()
    assert settings.signing_namespaces == ("meshtrust-system", "ca-rotation")
    assert settings.signs_from("ca-rotation")
    assert not settings.signs_from("kube-system")
    monkeypatch.delenv("MESHTRUST_ISSUER_SIGNING_NAMESPACE")
    monkeypatch.delenv("MESHTRUST_ISSUER_SIGNING_NAMESPACES")
    unscoped = IssuerSettings()
    assert unscoped.signing_namespaces == ()
    assert unscoped.signs_from("kube-system")  # the permissive mode, documented


async def status_of(w: World, cluster: str, name: str) -> IssuedCertificate:
    return IssuedCertificate.from_object(
        await w.kube.get(ISSUED_CERTIFICATES, name, namespace=cluster)
    )


async def failed(w: World, cluster: str, name: str) -> IssuedCertificate | None:
    ic = await status_of(w, cluster, name)
    return ic if ic.status.state.value == "FAILED" else None


def foreign(cluster: str, name: str, *, namespace: str, secret: str) -> dict[str, Any]:
    body = declaration(cluster, name)
    body["spec"]["signingCertificateSecret"] = {"name": secret, "namespace": namespace}
    return body


async def test_a_declaration_naming_a_ca_outside_the_signing_namespaces_is_never_signed(
    tmp_path: Path, nats_settings: NatsSettings
) -> None:
    async with world(tmp_path, nats_settings) as w, running(w.settings()):
        bucket = await w.bus.bucket(DESIRED_BUCKET)
        # Valid CAs, in the wrong places: kube-system and another cluster's namespace.
        other = Hierarchy.make(levels=1)
        await w.create(secret_body("other-ca", "kube-system", other.secret_data()))
        await w.create(secret_body("west-ca", "west", other.secret_data()))
        decls = {
            "kube": await w.create(
                foreign("east", "kube", namespace="kube-system", secret="other-ca")
            ),
            "west": await w.create(foreign("east", "west", namespace="west", secret="west-ca")),
        }
        await w.create(declaration("east", "in-scope"))
        await eventually(
            lambda: bucket.get("east.issuedcertificates.in-scope"), message="in-scope published"
        )
        for name, where in (("kube", "kube-system/other-ca"), ("west", "west/west-ca")):
            ic = await eventually(lambda n=name: failed(w, "east", n), message=f"{name} FAILED")
            assert ic.status.error.startswith(f"issuer: signingCertificateSecret {where} is ")
            assert "outside the issuer's signing namespaces (meshtrust-system)" in ic.status.error
            assert "MESHTRUST_ISSUER_SIGNING_NAMESPACES" in ic.status.error
            assert await bucket.get(f"east.issuedcertificates.{name}") is None

        # An agent that sends CSRs for them anyway (it never got them published) is denied.
        agent = w.agent("east")
        for name, body in decls.items():
            request = await agent.send(agent.request(body))
            answer = await w.answers.denied(request.issuance)
            assert answer.data.reason == "SigningSecretOutOfScope", name
        assert await ledger_entries(w) == []


async def test_without_signing_namespaces_any_secret_signs_as_documented(
    tmp_path: Path, nats_settings: NatsSettings
) -> None:
    async with world(tmp_path, nats_settings) as w:
        other = Hierarchy.make(levels=1)
        await w.create(secret_body("west-ca", "west", other.secret_data()))
        # The permissive mode is the settings' part; the RBAC must let the issuer read there too.
        await w.grant_secrets_everywhere()
        async with running(w.settings(signing_namespaces=())):
            body = await w.create(foreign("east", "west", namespace="west", secret="west-ca"))
            bucket = await w.bus.bucket(DESIRED_BUCKET)
            await eventually(
                lambda: bucket.get("east.issuedcertificates.west"), message="publication"
            )
            agent = w.agent("east")
            request = await agent.send(agent.request(body))
            answer = await w.answers.issued(request.issuance)
            cert = x509.load_pem_x509_certificate(answer.data.certificate_pem.encode())
            cert.verify_directly_issued_by(other.signer.cert)  # west's CA: the permissive mode
        assert len(await ledger_entries(w)) == 1


class RefusingKube(KubeClient):
    """The management API server as the issuer sees it when its RBAC lacks one Secret: every
    request is served, except a read of `refused`, which is answered 403 in kube's words."""

    refused: ObjectKey = ObjectKey(SYSTEM_NAMESPACE, SIGNING_SECRET)
    reads_refused = 0

    async def get(
        self, resource: Resource, name: str, *, namespace: str | None = None
    ) -> dict[str, Any]:
        if resource is SECRETS and ObjectKey(namespace or "", name) == self.refused:
            self.reads_refused += 1
            raise Forbidden(
                f'secrets "{name}" is forbidden: User "system:serviceaccount:meshtrust-system:'
                f'meshtrust-issuer" cannot get resource "secrets" in API group "" in the '
                f'namespace "{namespace}"',
                code=403,
                reason="Forbidden",
            )
        return await super().get(resource, name, namespace=namespace)


@contextlib.asynccontextmanager
async def refusing(w: World) -> AsyncIterator[RefusingKube]:
    client = RefusingKube.from_kubeconfig(w.kubeconfig)
    assert isinstance(client, RefusingKube)
    async with client:
        yield client


async def test_a_forbidden_signing_secret_fails_the_declaration_and_waits_for_a_person(
    tmp_path: Path, nats_settings: NatsSettings
) -> None:
    async with world(tmp_path, nats_settings) as w, refusing(w) as kube:
        await w.create(declaration("east", "istio-ca"))
        settings = w.settings()
        with ThreadPoolExecutor(max_workers=1) as executor:
            declarations = Declarations(
                settings=settings,
                kube=kube,
                desired=await w.bus.bucket(DESIRED_BUCKET),
                signing_cas=SigningCAs(),
                executor=executor,
                recorder=EventRecorder(kube, component="meshtrust-issuer"),
            )
            watching = asyncio.create_task(declarations.certificates.run())
            try:
                await declarations.certificates.wait_synced()
                result = await declarations.reconcile_certificate(ObjectKey("east", "istio-ca"))
            finally:
                watching.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watching
        # Not an error to retry with backoff: FAILED, and a look again at the sweep's pace.
        assert result == RequeueAfter(settings.sweep_interval)
        ic = await status_of(w, "east", "istio-ca")
        assert ic.status.state.value == "FAILED"
        assert "may not read signingCertificateSecret meshtrust-system/root-ca" in ic.status.error
        assert "403 Forbidden" in ic.status.error
        assert "Grant the issuer's ServiceAccount get on that Secret" in ic.status.error
        bucket = await w.bus.bucket(DESIRED_BUCKET)
        assert await bucket.get("east.issuedcertificates.istio-ca") is None


async def test_a_csr_whose_signing_secret_is_forbidden_is_denied_not_retried(
    tmp_path: Path, nats_settings: NatsSettings
) -> None:
    async with world(tmp_path, nats_settings) as w, refusing(w) as kube:
        body = await w.create(declaration("east", "istio-ca"))
        request = w.agent("east").request(body)
        # Handled without raising: acked, not nak'ed into an endless redelivery.
        await handled_once(w, request, kube=kube)
        answer = await w.answers.denied(request.issuance)
        assert answer.data.reason == "SigningSecretForbidden"
        assert "Grant the issuer's ServiceAccount get" in answer.data.message
        assert kube.reads_refused == 1
        assert await ledger_entries(w) == []
