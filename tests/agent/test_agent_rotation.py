"""The agent's side of a root rotation (docs/rotation.md), end to end over a real nats-server and
the emulator: the issuer's answers for each step are built here with `shared.pki` (`StepIssuer`,
the table of agent_rotation.py) and published as the issuer; the rotation controller is not here.

- a change of the IssuedCertificate's trust epoch re-issues once per step: one new key, one CSR
  carrying the epoch, one bounce; add (old CA, old + new roots), move (new CA, accepted through
  the cross certificate), drop (the new root alone) are installed as sent, and the agent's own
  check of the Secret in place keeps accepting them;
- forged answers for a step (a root vouched for by itself, the new root without its cross
  certificate) are refused as UntrustedRoot and change nothing;
- a deleted IssuedCertificate made again from desired state re-adopts its valid certificate: no
  new key, no CSR, no bounce.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from agent.agent_rotation import Rotation, StepIssuer, cert_pem, make_rotation
from agent.agent_testing import (
    AgentProcess,
    Audit,
    FakeBouncer,
    get_secret,
    ic_body,
    running_consumers,
    state_of,
    wait_status,
)
from agent.test_agent_desired import desired
from cryptography import x509

from services.agent.objects import CROSS_SIGNED, TRUST_EPOCH, AgentObjects, key_secret_name
from services.agent.settings import AgentSettings
from services.agent.trust import TrustAnchors, assess_issued, parse_trust_bundle
from shared.api.v1alpha2 import IssuedCertificateSpec
from shared.bus import Bus
from shared.events import (
    DESIRED_BUCKET,
    DesiredKind,
    EventType,
    desired_key,
)
from shared.k8s.client import KubeClient
from shared.k8s.errors import NotFound
from shared.k8s.resources import ISSUED_CERTIFICATES, POD_BOUNCE_DIRECTIVES, SECRETS
from shared.pki import Bundle, SigningCA, check_bundle, fingerprint, serial_hex
from shared.runtime.clock import utcnow
from support.waiting import eventually

EPOCH = "rot.0123abcd"
_forged_attempts = itertools.count(90)


@pytest.fixture(scope="module")
def rot() -> Rotation:
    return make_rotation()


@pytest.fixture
def signing_ca(rot: Rotation) -> SigningCA:
    """The conftest's trust bundle pins this CA's root: the old root."""
    return rot.old


@pytest.fixture
async def stepper(
    bus: Bus, kube: KubeClient, rot: Rotation, bouncer: FakeBouncer, audit: Audit
) -> AsyncIterator[StepIssuer]:
    issuer = StepIssuer(bus=bus, kube=kube, rot=rot)
    async with running_consumers(
        bus,
        ("step-issuer", EventType.CSR_REQUESTED, issuer),
        ("test-bouncer", EventType.BOUNCE_REQUESTED, bouncer),
        ("test-audit", EventType.STATUS_CHANGED, audit),
    ):
        yield issuer


async def make_directive(kube: KubeClient, namespace: str) -> None:
    await kube.create(
        POD_BOUNCE_DIRECTIVES,
        {
            "apiVersion": "certificates.smh.solo.io/v1alpha2",
            "kind": "PodBounceDirective",
            "metadata": {"name": "istiod", "namespace": namespace},
            "spec": {"podsToBounce": [{"namespace": namespace, "labels": {"app": "istiod"}}]},
        },
    )


async def set_epoch(kube: KubeClient, namespace: str, epoch: str) -> None:
    await kube.patch_merge(
        ISSUED_CERTIFICATES,
        "istio-ca",
        {"metadata": {"annotations": {TRUST_EPOCH: epoch}}},
        namespace=namespace,
    )


async def finished_other_than(kube: KubeClient, namespace: str, issuance: str) -> dict[str, Any]:
    return await wait_status(
        kube,
        namespace,
        "istio-ca",
        lambda s: s.get("state") == "FINISHED" and s.get("issuanceId") != issuance,
        within=30,
        message="FINISHED with a new issuance",
    )


def certificates(data: bytes) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(data)


async def assessed_problem(
    kube: KubeClient, namespace: str, rot: Rotation, *, drop_cross: bool = False
) -> str | None:
    """What the agent's check of the Secret in place (`assess_issued`) says of it, with the old
    root pinned; `drop_cross`: as if the cross certificate had not been kept."""
    secret = await kube.get(SECRETS, "istio-ca-cacerts", namespace=namespace)
    if drop_cross:
        secret["metadata"]["annotations"].pop(CROSS_SIGNED)
    anchors = parse_trust_bundle({"data": {"roots.pem": rot.pinned_pem}}, ref="x/y")
    assert isinstance(anchors, TrustAnchors)
    ic = await kube.get(ISSUED_CERTIFICATES, "istio-ca", namespace=namespace)
    view = await assess_issued(
        secret,
        spec=IssuedCertificateSpec.model_validate(ic["spec"]),
        checks=AgentObjects(kube).bundles,
        anchors=anchors,
        now=utcnow(),
    )
    return view.problem


async def test_each_step_re_issues_once_and_installs_the_step_bundle(
    kube: KubeClient,
    namespace: str,
    stepper: StepIssuer,
    bouncer: FakeBouncer,
    rot: Rotation,
    make_settings: Callable[..., AgentSettings],
) -> None:
    await make_directive(kube, namespace)
    agent = AgentProcess(make_settings())
    await agent.start()
    try:
        body = ic_body("istio-ca", namespace, bounce="istiod")
        await kube.create(ISSUED_CERTIFICATES, body)
        status = await finished_other_than(kube, namespace, "")
        assert stepper.epochs() == [None]
        before = await get_secret(kube, namespace, "istio-ca-cacerts")
        assert before is not None
        expected = {
            "add": (rot.old_root, [rot.old_root, rot.new_root]),
            "move": (rot.new_root, [rot.old_root, rot.new_root]),
            "drop": (rot.new_root, [rot.new_root]),
        }
        for n, (step, (chain_root, roots)) in enumerate(expected.items(), start=2):
            epoch = f"{EPOCH}.{step}"
            await set_epoch(kube, namespace, epoch)
            status = await finished_other_than(kube, namespace, status["issuanceId"])
            assert stepper.epochs()[1:] == [f"{EPOCH}.{s}" for s in list(expected)[: n - 1]]
            assert len(bouncer.requests) == n, f"one bounce per step ({step})"
            after = await get_secret(kube, namespace, "istio-ca-cacerts")
            assert after is not None
            assert after["ca-key.pem"] != before["ca-key.pem"], f"a new key for {step}"
            assert [c.subject for c in certificates(after["root-cert.pem"])] == [
                r.cert.subject for r in roots
            ]
            assert certificates(after["cert-chain.pem"])[-1] == chain_root.cert
            info = check_bundle(
                Bundle.from_secret_data(after),
                hosts=body["spec"]["hosts"],
                org="meshtrust",
                now=utcnow(),
            )
            assert status["serialNumber"] == serial_hex(info.serial)
            secret = await kube.get(SECRETS, "istio-ca-cacerts", namespace=namespace)
            notes = secret["metadata"]["annotations"]
            assert notes[TRUST_EPOCH] == epoch
            assert notes[CROSS_SIGNED] == cert_pem(rot.cross)
            assert await assessed_problem(kube, namespace, rot) is None, step
            before = after
        # Only the kept cross certificate vouches for the new root in place.
        problem = await assessed_problem(kube, namespace, rot, drop_cross=True)
        assert problem is not None
        assert "UntrustedRoot" in problem
        assert await get_secret(kube, namespace, key_secret_name("istio-ca")) is None
        assert len(stepper.requests) == 4
        agent.check()
    finally:
        await agent.stop()


async def test_forged_step_answers_are_refused_and_change_nothing(
    kube: KubeClient,
    namespace: str,
    bus: Bus,
    stepper: StepIssuer,
    rot: Rotation,
    make_settings: Callable[..., AgentSettings],
) -> None:
    agent = AgentProcess(make_settings(resend_after=2.0))
    await agent.start()
    try:
        await kube.create(ISSUED_CERTIFICATES, ic_body("istio-ca", namespace))
        first = await finished_other_than(kube, namespace, "")
        installed = await get_secret(kube, namespace, "istio-ca-cacerts")
        stepper.silent = True
        await set_epoch(kube, namespace, f"{EPOCH}.move")
        await eventually(lambda: len(stepper.requests) >= 2, within=20, message="the CSR")
        request = stepper.requests[1]
        assert request.data.trust_epoch == f"{EPOCH}.move"
        forgeries = [
            # the attacker's CA, its root beside the old one, vouched for by the attacker itself
            (
                rot.attacker_root,
                await stepper.answer(
                    request,
                    signer=rot.attacker,
                    roots=cert_pem(rot.old_root.cert, rot.attacker_root.cert),
                    cross=cert_pem(rot.attacker_root.cert),
                ),
            ),
            # the genuine new CA and roots, but no cross certificate
            (rot.new_root, await stepper.answer(request, cross=None)),
        ]
        for untrusted, forged in forgeries:
            data = forged.data.model_copy(update={"attempt": next(_forged_attempts)})
            await bus.publish(forged.model_copy(update={"data": data, "source": "bouncer/east"}))
            named = fingerprint(untrusted.cert)[:16]
            status = await wait_status(
                kube,
                namespace,
                "istio-ca",
                lambda s, named=named: (
                    "UntrustedRoot" in (s.get("error") or "") and named in s["error"]
                ),
                message="UntrustedRoot reported, naming the root",
            )
            assert (status["state"], status["issuanceId"]) == ("REQUESTED", request.issuance)
            assert await get_secret(kube, namespace, "istio-ca-cacerts") == installed
        stepper.silent = False  # the agent's timed re-send gets the real answer
        done = await finished_other_than(kube, namespace, first["issuanceId"])
        assert done["issuanceId"] == request.issuance
        after = await get_secret(kube, namespace, "istio-ca-cacerts")
        assert after is not None
        assert certificates(after["cert-chain.pem"])[-1] == rot.new_root.cert
        agent.check()
    finally:
        await agent.stop()


async def test_a_deleted_issued_certificate_re_adopts_its_certificate(
    kube: KubeClient,
    namespace: str,
    bus: Bus,
    stepper: StepIssuer,
    bouncer: FakeBouncer,
    audit: Audit,
    make_settings: Callable[..., AgentSettings],
) -> None:
    await make_directive(kube, namespace)
    agent = AgentProcess(make_settings())
    await agent.start()
    try:
        bucket = await bus.bucket(DESIRED_BUCKET)
        spec = ic_body("istio-ca", namespace, bounce="istiod")["spec"]
        await bucket.put(
            desired_key("east", DesiredKind.ISSUED_CERTIFICATE, "istio-ca"),
            desired(DesiredKind.ISSUED_CERTIFICATE, "istio-ca", namespace, spec)
            .model_dump_json()
            .encode(),
        )

        async def finished() -> bool:
            return await state_of(kube, namespace, "istio-ca") == "FINISHED"

        await eventually(finished, within=30, message="the desired IssuedCertificate FINISHED")
        first = await finished_other_than(kube, namespace, "")
        installed = await get_secret(kube, namespace, "istio-ca-cacerts")
        old = await kube.get(ISSUED_CERTIFICATES, "istio-ca", namespace=namespace)
        assert len(stepper.requests) == 1
        assert len(bouncer.requests) == 1
        await eventually(
            lambda: audit.states("istio-ca")[-1:] == ["FINISHED"], message="FINISHED reported"
        )
        reported = len(audit.events)

        await kube.delete(ISSUED_CERTIFICATES, "istio-ca", namespace=namespace)

        async def recreated_finished() -> dict[str, Any] | None:
            try:
                ic = await kube.get(ISSUED_CERTIFICATES, "istio-ca", namespace=namespace)
            except NotFound:
                return None
            new = ic["metadata"]["uid"] != old["metadata"]["uid"]
            status = ic.get("status") or {}
            return status if new and status.get("state") == "FINISHED" else None

        status = await eventually(recreated_finished, within=30, message="re-made, FINISHED")
        assert status["issuanceId"] == first["issuanceId"]
        assert status["serialNumber"] == first["serialNumber"]
        assert await get_secret(kube, namespace, "istio-ca-cacerts") == installed, "same key"
        assert await get_secret(kube, namespace, key_secret_name("istio-ca")) is None
        await eventually(
            lambda: [e.data.state.value for e in audit.events[reported:]] == ["FINISHED"],
            message="the re-adoption reported as FINISHED",
        )
        assert audit.events[-1].data.serial_number == first["serialNumber"]
        assert len(stepper.requests) == 1, "no CSR"
        assert len(bouncer.requests) == 1, "no bounce"
        agent.check()
    finally:
        await agent.stop()


async def test_an_agent_killed_in_requested_resends_the_same_csr_with_the_same_epoch(
    kube: KubeClient,
    namespace: str,
    stepper: StepIssuer,
    rot: Rotation,
    make_settings: Callable[..., AgentSettings],
) -> None:
    stepper.silent = True
    process = AgentProcess(make_settings(resend_after=2.0))
    await process.start()
    body = ic_body("istio-ca", namespace)
    body["metadata"]["annotations"] = {TRUST_EPOCH: f"{EPOCH}.add"}
    await kube.create(ISSUED_CERTIFICATES, body)
    await eventually(lambda: len(stepper.requests) == 1, within=20, message="the first CSR")
    key_before = await get_secret(kube, namespace, key_secret_name("istio-ca"))
    assert key_before is not None
    issuance = stepper.requests[0].issuance

    await process.kill()
    stepper.silent = False
    await process.start()
    try:
        status = await finished_other_than(kube, namespace, "")
    finally:
        await process.stop()

    assert process.starts == 2
    assert status["issuanceId"] == issuance
    assert len(stepper.requests) >= 2, "the restart sent it again"
    assert {r.issuance for r in stepper.requests} == {issuance}
    assert {r.data.csr_pem.encode() for r in stepper.requests} == {key_before["csr.pem"]}
    assert set(stepper.epochs()) == {f"{EPOCH}.add"}
    issued = await get_secret(kube, namespace, "istio-ca-cacerts")
    assert issued is not None
    assert issued["ca-key.pem"] == key_before["tls.key"]
    assert len(x509.load_pem_x509_certificates(issued["root-cert.pem"])) == 2
    secret = await kube.get(SECRETS, "istio-ca-cacerts", namespace=namespace)
    assert secret["metadata"]["annotations"][TRUST_EPOCH] == f"{EPOCH}.add"
    assert rot.old_root.cert == x509.load_pem_x509_certificates(issued["cert-chain.pem"])[-1]
