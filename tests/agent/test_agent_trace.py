"""One issuance, one trace: the real agent in-process with the issuer's and the bouncer's sides
played by test code (through shared.bus, as the services are), every event of the issuance read
back from the MESHTRUST stream with the headers it was stored with."""

from __future__ import annotations

from agent.agent_testing import AgentProcess, Audit, FakeBouncer, ic_body, state_of
from k8s.harness import eventually

from shared.bus import Bus
from shared.bus.reading import read_stream
from shared.events import EventType
from shared.k8s.client import KubeClient
from shared.k8s.resources import ISSUED_CERTIFICATES, POD_BOUNCE_DIRECTIVES
from shared.runtime.tracing import parse_traceparent, trace_id_for

FLOW = {
    EventType.CSR_REQUESTED,
    EventType.CERTIFICATE_ISSUED,
    EventType.BOUNCE_REQUESTED,
    EventType.BOUNCE_COMPLETED,
    EventType.STATUS_CHANGED,
}


async def test_every_event_of_an_issuance_shares_its_trace(
    bus: Bus,
    kube: KubeClient,
    namespace: str,
    agent: AgentProcess,
    bouncer: FakeBouncer,
    audit: Audit,
) -> None:
    await kube.create(
        POD_BOUNCE_DIRECTIVES,
        {
            "apiVersion": "certificates.smh.solo.io/v1alpha2",
            "kind": "PodBounceDirective",
            "metadata": {"name": "istiod", "namespace": namespace},
            "spec": {"podsToBounce": [{"namespace": namespace, "labels": {"app": "istiod"}}]},
        },
    )
    body = ic_body("istio-ca", namespace, bounce="istiod", keyAlgorithm="ECDSA", keySize=256)
    await kube.create(ISSUED_CERTIFICATES, body)

    async def finished() -> bool:
        return await state_of(kube, namespace, "istio-ca") == "FINISHED"

    await eventually(finished, within=30, message="FINISHED")
    await eventually(lambda: "FINISHED" in audit.states("istio-ca"), message="status FINISHED")

    stored = [m async for m in read_stream(bus.connection, bus.settings.stream, subject=">")]
    types = {EventType(m.subject.split(".", 3)[3]) for m in stored}
    assert types == FLOW, "the whole flow was stored"
    (issuance,) = {bouncer.requests[0].issuance}
    parents = [parse_traceparent((m.headers or {})["traceparent"]) for m in stored]
    assert {p.trace_id for p in parents} == {trace_id_for(issuance)}
    assert len({p.span_id for p in parents}) == len(stored), "a span of its own for each event"
