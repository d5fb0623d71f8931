"""Desired state: what the issuer puts in KV `meshtrust-desired` under `east.` appears in the
cluster, follows updates, goes on delete, and comes back after drift; unmanaged objects are
left alone; a declaration the cluster refuses is reported as FAILED naming the field."""

from __future__ import annotations

from typing import Any

from agent.agent_testing import AgentProcess, Audit, FakeIssuer, ic_body, state_of
from structlog.testing import capture_logs

from services.agent.objects import (
    DECLARATION_GENERATION,
    DECLARATION_UID,
    MANAGED_BY,
    SIGNING_CHAIN,
)
from shared.bus import Bus
from shared.events import DESIRED_BUCKET, DesiredKind, DesiredObject, desired_key
from shared.k8s.client import KubeClient
from shared.k8s.errors import NotFound
from shared.k8s.resources import ISSUED_CERTIFICATES, POD_BOUNCE_DIRECTIVES, SECRETS
from support.waiting import eventually


def desired(
    kind: DesiredKind,
    name: str,
    namespace: str,
    spec: dict[str, Any],
    generation: int = 1,
    chain: str | None = None,
) -> DesiredObject:
    return DesiredObject(
        cluster="east",
        kind=kind,
        name=name,
        namespace=namespace,
        uid=f"uid-{name}",
        generation=generation,
        spec=spec,
        signing_chain_fingerprint=chain,
    )


async def get_or_none(
    kube: KubeClient, resource: Any, namespace: str, name: str
) -> dict[str, Any] | None:
    try:
        return await kube.get(resource, name, namespace=namespace)
    except NotFound:
        return None


async def test_desired_objects_are_applied_updated_and_deleted(
    kube: KubeClient, namespace: str, agent: AgentProcess, bus: Bus
) -> None:
    bucket = await bus.bucket(DESIRED_BUCKET)
    ic_key = desired_key("east", DesiredKind.ISSUED_CERTIFICATE, "istio-ca")
    pbd_key = desired_key("east", DesiredKind.POD_BOUNCE_DIRECTIVE, "istiod")
    spec = ic_body("istio-ca", namespace, bounce="istiod")["spec"]
    pbd_spec = {"podsToBounce": [{"namespace": namespace, "labels": {"app": "istiod"}}]}
    await bucket.put(
        pbd_key,
        desired(DesiredKind.POD_BOUNCE_DIRECTIVE, "istiod", namespace, pbd_spec)
        .model_dump_json()
        .encode(),
    )
    await bucket.put(
        ic_key,
        desired(DesiredKind.ISSUED_CERTIFICATE, "istio-ca", namespace, spec)
        .model_dump_json()
        .encode(),
    )

    async def applied() -> bool:
        return await state_of(kube, namespace, "istio-ca") == "FINISHED"

    await eventually(applied, within=20, message="the desired IssuedCertificate FINISHED")
    ic = await kube.get(ISSUED_CERTIFICATES, "istio-ca", namespace=namespace)
    assert ic["metadata"]["labels"][MANAGED_BY] == "meshtrust"
    assert ic["metadata"]["annotations"][DECLARATION_UID] == "uid-istio-ca"
    assert ic["metadata"]["annotations"][DECLARATION_GENERATION] == "1"
    pbd = await kube.get(POD_BOUNCE_DIRECTIVES, "istiod", namespace=namespace)
    assert pbd["metadata"]["labels"][MANAGED_BY] == "meshtrust"

    updated = {**spec, "org": "meshtrust-2"}
    await bucket.put(
        ic_key,
        desired(DesiredKind.ISSUED_CERTIFICATE, "istio-ca", namespace, updated, 2)
        .model_dump_json()
        .encode(),
    )

    async def followed() -> bool:
        ic = await kube.get(ISSUED_CERTIFICATES, "istio-ca", namespace=namespace)
        return (
            ic["spec"]["org"] == "meshtrust-2"
            and ic["metadata"]["annotations"][DECLARATION_GENERATION] == "2"
            and (ic.get("status") or {}).get("state") == "FINISHED"
            and (ic.get("status") or {}).get("observedGeneration") == ic["metadata"]["generation"]
        )

    await eventually(followed, within=20, message="the update applied and issued")

    await bucket.delete(ic_key)
    await bucket.delete(pbd_key)

    async def gone() -> bool:
        return (
            await get_or_none(kube, ISSUED_CERTIFICATES, namespace, "istio-ca") is None
            and await get_or_none(kube, POD_BOUNCE_DIRECTIVES, namespace, "istiod") is None
        )

    await eventually(gone, within=20, message="both deleted")


async def test_drift_is_repaired_and_unmanaged_objects_are_left_alone(
    kube: KubeClient, namespace: str, agent: AgentProcess, bus: Bus
) -> None:
    bucket = await bus.bucket(DESIRED_BUCKET)
    spec = ic_body("istio-ca", namespace)["spec"]
    await bucket.put(
        desired_key("east", DesiredKind.ISSUED_CERTIFICATE, "istio-ca"),
        desired(DesiredKind.ISSUED_CERTIFICATE, "istio-ca", namespace, spec)
        .model_dump_json()
        .encode(),
    )
    unmanaged = ic_body("local", namespace)
    unmanaged["spec"]["org"] = "hand-made"
    await kube.create(ISSUED_CERTIFICATES, unmanaged)
    await bucket.put(
        desired_key("east", DesiredKind.ISSUED_CERTIFICATE, "local"),
        desired(DesiredKind.ISSUED_CERTIFICATE, "local", namespace, spec)
        .model_dump_json()
        .encode(),
    )

    async def present() -> bool:
        return await get_or_none(kube, ISSUED_CERTIFICATES, namespace, "istio-ca") is not None

    await eventually(present, within=20)
    await kube.patch_merge(
        ISSUED_CERTIFICATES, "istio-ca", {"spec": {"org": "tampered"}}, namespace=namespace
    )

    async def restored() -> bool:
        ic = await get_or_none(kube, ISSUED_CERTIFICATES, namespace, "istio-ca")
        return ic is not None and ic["spec"]["org"] == "meshtrust"

    await eventually(restored, within=20, message="the edit reverted")
    await kube.delete(ISSUED_CERTIFICATES, "istio-ca", namespace=namespace)

    async def recreated() -> bool:
        ic = await get_or_none(kube, ISSUED_CERTIFICATES, namespace, "istio-ca")
        return ic is not None and (ic.get("status") or {}).get("state") == "FINISHED"

    await eventually(recreated, within=20, message="the deleted object re-created and issued")
    local = await kube.get(ISSUED_CERTIFICATES, "local", namespace=namespace)
    assert local["spec"]["org"] == "hand-made"
    assert MANAGED_BY not in (local["metadata"].get("labels") or {})


async def test_a_desired_object_the_cluster_refuses_is_reported_failed_naming_the_field(
    kube: KubeClient, namespace: str, agent: AgentProcess, bus: Bus, audit: Audit
) -> None:
    bucket = await bus.bucket(DESIRED_BUCKET)
    spec = ic_body("istio-ca", namespace)["spec"]
    del spec["issuedCertificateSecret"]
    await bucket.put(
        desired_key("east", DesiredKind.ISSUED_CERTIFICATE, "istio-ca"),
        desired(DesiredKind.ISSUED_CERTIFICATE, "istio-ca", namespace, spec)
        .model_dump_json()
        .encode(),
    )
    await eventually(lambda: audit.states("istio-ca") == ["FAILED"], within=20)
    event = audit.events[0]
    assert event.data.error is not None
    assert "issuedCertificateSecret" in event.data.error
    assert event.data.declaration_generation == 1
    assert await get_or_none(kube, ISSUED_CERTIFICATES, namespace, "istio-ca") is None


async def test_a_changed_signing_ca_is_issued_again_once(
    kube: KubeClient, namespace: str, agent: AgentProcess, bus: Bus, issuer: FakeIssuer
) -> None:
    bucket = await bus.bucket(DESIRED_BUCKET)
    key = desired_key("east", DesiredKind.ISSUED_CERTIFICATE, "istio-ca")
    spec = ic_body("istio-ca", namespace)["spec"]

    async def put(chain: str) -> None:
        value = desired(DesiredKind.ISSUED_CERTIFICATE, "istio-ca", namespace, spec, chain=chain)
        await bucket.put(key, value.model_dump_json().encode())

    async def finished_under(chain: str) -> bool:
        secret = await get_or_none(kube, SECRETS, namespace, "istio-ca-cacerts")
        state = await state_of(kube, namespace, "istio-ca")
        notes = (secret or {}).get("metadata", {}).get("annotations") or {}
        return state == "FINISHED" and notes.get(SIGNING_CHAIN) == chain

    await put("a" * 64)
    await eventually(lambda: finished_under("a" * 64), within=20, message="the first issuance")
    assert len({r.issuance for r in issuer.requests}) == 1
    await put("b" * 64)
    await eventually(lambda: finished_under("b" * 64), within=20, message="re-issued")
    assert len({r.issuance for r in issuer.requests}) == 2
    ic = await kube.get(ISSUED_CERTIFICATES, "istio-ca", namespace=namespace)
    assert ic["metadata"]["generation"] == 1  # an annotation: no spec change


async def test_an_unreadable_desired_value_is_ignored_never_read_as_a_deletion(
    kube: KubeClient, namespace: str, agent: AgentProcess, bus: Bus
) -> None:
    bucket = await bus.bucket(DESIRED_BUCKET)
    key = desired_key("east", DesiredKind.ISSUED_CERTIFICATE, "istio-ca")
    spec = ic_body("istio-ca", namespace)["spec"]
    good = desired(DesiredKind.ISSUED_CERTIFICATE, "istio-ca", namespace, spec)
    await bucket.put(key, good.model_dump_json().encode())

    async def finished() -> dict[str, Any] | None:
        ic = await get_or_none(kube, ISSUED_CERTIFICATES, namespace, "istio-ca")
        return ic if ic and (ic.get("status") or {}).get("state") == "FINISHED" else None

    before = await eventually(finished, within=20, message="istio-ca issued")
    assert before is not None

    def left_alone(logs: list[dict[str, Any]]) -> bool:
        return any(
            e["event"] == "desired entry unreadable; its object is left as it is"
            and e["kv_key"] == key
            for e in logs
        )

    with capture_logs() as logs:
        # what a reply-subject injection stored under east's key: a PubAck
        await bucket.put(key, b'{"stream":"KV_meshtrust-desired","seq":3}')
        await eventually(
            lambda: any(e["event"].startswith("desired entry unreadable") for e in logs),
            message="the junk value seen",
        )
        # A restart: the snapshot holds only the junk, and no good value was seen before it.
        await agent.kill()
        await agent.start()
        await eventually(lambda: left_alone(logs), within=20, message="the key reconciled")
    unreadable = [e for e in logs if e["event"].startswith("desired entry unreadable; ignored")]
    assert unreadable
    assert {e["reason"] for e in unreadable} == {"SchemaMismatch"}
    after = await get_or_none(kube, ISSUED_CERTIFICATES, namespace, "istio-ca")
    assert after is not None, "a junk desired value deleted the IssuedCertificate"
    assert after["metadata"]["uid"] == before["metadata"]["uid"]
    assert after["status"]["issuanceId"] == before["status"]["issuanceId"]

    # the declaration's next good value is applied again
    changed = {**spec, "org": "meshtrust-two"}
    await bucket.put(
        key,
        desired(DesiredKind.ISSUED_CERTIFICATE, "istio-ca", namespace, changed, generation=2)
        .model_dump_json()
        .encode(),
    )

    async def updated() -> bool:
        ic = await get_or_none(kube, ISSUED_CERTIFICATES, namespace, "istio-ca")
        return ic is not None and ic["spec"]["org"] == "meshtrust-two"

    await eventually(updated, within=20, message="the next good value applied")
