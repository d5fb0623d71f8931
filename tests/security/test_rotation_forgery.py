"""Teaching an agent a root it must not trust, from the attacker's side (root rotation, issue 18).

A real nats-server with the shipped account model (nkeys, provisioned as in production), the
emulated cluster, and the agent in-process with its own identity (`agent-east`). The only
identity the bus lets publish `certificate.issued` for east is the issuer's; a bouncer's
attempt is not even stored. So the attack that remains is one made with the issuer's own
credentials (stolen, or a compromised issuer) but without the old root's key: an answer whose
new root is vouched for by a cross certificate it signed itself. The agent refuses it as
UntrustedRoot and writes nothing; the genuine step answer (the new root cross-signed by the old
one) is then installed.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Callable, Iterator

import pytest
from agent.agent_rotation import Rotation, StepIssuer, cert_pem, make_rotation
from agent.agent_testing import (
    AgentProcess,
    get_secret,
    ic_body,
    running_consumers,
    wait_status,
)

# tests/agent's fixtures: a module's fixtures are the names it holds
from agent.conftest import (  # noqa: F401
    kube,
    kubeapi,
    kubeconfig,
    make_settings,
    namespace,
    no_retry_waits,
    trust_bundle,
)
from cryptography import x509

from services.agent.objects import TRUST_EPOCH
from services.agent.settings import AgentSettings
from shared.bus import Bus, NatsSettings
from shared.bus.publishing import MSG_ID
from shared.events import EventType, encode
from shared.k8s.client import KubeClient
from shared.k8s.resources import ISSUED_CERTIFICATES
from shared.pki import SigningCA, fingerprint
from support.secured_nats import SecuredNats, secured_nats
from support.waiting import eventually

pytestmark = pytest.mark.slow
EPOCH = "rot.0123abcd.move"
_attempts = itertools.count(50)


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecuredNats]:
    import asyncio

    with secured_nats(tmp_path_factory.mktemp("hub"), ("east",)) as secured:
        asyncio.run(secured.provision(("east",)))
        yield secured


@pytest.fixture
def nats_settings(hub: SecuredNats) -> NatsSettings:
    """The agent's own identity (tests/agent's `make_settings` connects with this)."""
    return hub.settings("agent-east", publish_deadline=20.0)


@pytest.fixture(scope="module")
def rot() -> Rotation:
    return make_rotation()


@pytest.fixture
def signing_ca(rot: Rotation) -> SigningCA:
    """tests/agent's trust bundle pins this CA's root: the old root."""
    return rot.old


@pytest.fixture
async def issuer_bus(hub: SecuredNats) -> AsyncIterator[Bus]:
    async with Bus.connect(hub.settings("issuer")) as bus:
        yield bus


async def test_a_root_vouched_for_without_the_old_roots_key_is_refused(
    kube: KubeClient,  # noqa: F811
    namespace: str,  # noqa: F811
    hub: SecuredNats,
    issuer_bus: Bus,
    rot: Rotation,
    make_settings: Callable[..., AgentSettings],  # noqa: F811
) -> None:
    stepper = StepIssuer(bus=issuer_bus, kube=kube, rot=rot, silent=True)
    agent = AgentProcess(make_settings(resend_after=2.0))
    async with running_consumers(issuer_bus, ("issuer", EventType.CSR_REQUESTED, stepper)):
        await agent.start()
        try:
            body = ic_body("istio-ca", namespace)
            body["metadata"]["annotations"] = {TRUST_EPOCH: EPOCH}
            await kube.create(ISSUED_CERTIFICATES, body)
            await eventually(lambda: stepper.requests, within=20, message="the CSR")
            request = stepper.requests[0]
            assert request.data.trust_epoch == EPOCH

            # The attacker's CA and root, its root "vouched for" by a cross certificate the
            # attacker signed itself, and the genuine new root beside it.
            forged = await stepper.answer(
                request,
                signer=rot.attacker,
                roots=cert_pem(rot.old_root.cert, rot.attacker_root.cert),
                cross=cert_pem(rot.cross, rot.attacker_root.cert),
            )
            forged = forged.model_copy(
                update={"data": forged.data.model_copy(update={"attempt": next(_attempts)})}
            )
            # A bouncer's credentials cannot even store it ...
            js = issuer_bus.connection.js
            last = (await js.stream_info("MESHTRUST")).state.last_seq
            client = await hub.connect_raw("bouncer-east")
            try:
                await client.publish(
                    "meshtrust.v1.east.certificate.issued",
                    encode(forged),
                    headers={MSG_ID: "forged-by-bouncer"},
                )
                await client.flush(timeout=2)
            finally:
                await client.close()
            assert (await js.stream_info("MESHTRUST")).state.last_seq == last
            # ... the issuer's can; the agent judges it on the pinned root alone.
            await issuer_bus.publish(forged)
            named = fingerprint(rot.attacker_root.cert)[:16]
            status = await wait_status(
                kube,
                namespace,
                "istio-ca",
                lambda s: "UntrustedRoot" in (s.get("error") or "") and named in s["error"],
                message="UntrustedRoot reported, naming the attacker's root",
            )
            assert (status["state"], status["issuanceId"]) == ("REQUESTED", request.issuance)
            assert await get_secret(kube, namespace, "istio-ca-cacerts") is None

            stepper.silent = False  # the genuine step answer, on the agent's timed re-send
            done = await wait_status(
                kube,
                namespace,
                "istio-ca",
                lambda s: s.get("state") == "FINISHED",
                within=30,
                message="FINISHED with the genuine answer",
            )
            assert done["issuanceId"] == request.issuance
            installed = await get_secret(kube, namespace, "istio-ca-cacerts")
            assert installed is not None
            chain = x509.load_pem_x509_certificates(installed["cert-chain.pem"])
            assert chain[-1] == rot.new_root.cert
            roots = x509.load_pem_x509_certificates(installed["root-cert.pem"])
            assert roots == [rot.old_root.cert, rot.new_root.cert]
            agent.check()
        finally:
            await agent.stop()
