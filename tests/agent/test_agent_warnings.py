"""Warning Events for a tampered issued Secret and for a foreign CA found in it: the re-issuance
itself is routine, what caused it is an operator's business. The decision is table-tested
(`services.agent.warnings`), the Events read back from the emulated cluster."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from agent.agent_testing import AgentProcess, ic_body, ic_status, state_of
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from services.agent.warnings import tamper_warning, warning_message
from shared.api import reasons
from shared.k8s.client import KubeClient
from shared.k8s.resources import EVENTS, ISSUED_CERTIFICATES, SECRETS
from shared.runtime.clock import utcnow
from support.waiting import eventually


@pytest.mark.parametrize(
    ("reason", "message", "warning"),
    [
        (
            reasons.SECRET_INVALID,
            "the issued Secret is not fit for use: UntrustedRoot: x",
            reasons.FOREIGN_CA,
        ),
        (
            reasons.SECRET_INVALID,
            "the issued Secret is not fit for use: bad PEM",
            reasons.SECRET_TAMPERED,
        ),
        (reasons.SECRET_MISMATCH, "the issued Secret holds serial 1", reasons.SECRET_TAMPERED),
        (reasons.PENDING, "new", None),
        (reasons.RENEWAL_DUE, "due", None),
        (reasons.SPEC_CHANGED, "changed", None),
        (reasons.SECRET_MISSING, "gone", None),
    ],
)
def test_which_reissuance_is_a_warning(reason: str, message: str, warning: str | None) -> None:
    assert tamper_warning(reason, message) == warning


def test_the_message_says_what_was_found_and_what_to_check() -> None:
    text = warning_message(reasons.FOREIGN_CA, "UntrustedRoot: y", secret="istio-system/cacerts")
    assert text.startswith("a foreign CA was found in istio-system/cacerts (UntrustedRoot: y)")
    assert "find out what else writes istio-system/cacerts" in text


def foreign_ca() -> dict[str, str]:
    """A self-signed CA nobody pinned, as cacerts data (base64)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "someone else's CA")])
    now = utcnow()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now.replace(year=now.year + 1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    data = {
        "ca-cert.pem": cert_pem,
        "ca-key.pem": key_pem,
        "cert-chain.pem": cert_pem,
        "root-cert.pem": cert_pem,
    }
    return {k: base64.b64encode(v).decode() for k, v in data.items()}


async def warnings(kube: KubeClient, namespace: str, name: str) -> list[dict[str, Any]]:
    events = await kube.list(EVENTS, namespace=namespace)
    return [
        e
        for e in events.items
        if e["involvedObject"]["name"] == name and e.get("type") == "Warning"
    ]


async def reissued(kube: KubeClient, namespace: str, serial: str) -> bool:
    status = await ic_status(kube, namespace, "istio-ca")
    return status.get("state") == "FINISHED" and status.get("serialNumber") != serial


@pytest.mark.parametrize(
    ("tamper", "reason", "found"),
    [
        ("foreign", reasons.FOREIGN_CA, "a foreign CA was found in"),
        ("garbled", reasons.SECRET_TAMPERED, "was changed outside meshtrust"),
    ],
)
async def test_a_tampered_cacerts_is_a_warning_event(
    kube: KubeClient, namespace: str, agent: AgentProcess, tamper: str, reason: str, found: str
) -> None:
    await kube.create(ISSUED_CERTIFICATES, ic_body("istio-ca", namespace))
    await eventually(lambda: state_of(kube, namespace, "istio-ca"), within=20)

    async def finished() -> bool:
        return await state_of(kube, namespace, "istio-ca") == "FINISHED"

    await eventually(finished, within=20)
    serial = (await ic_status(kube, namespace, "istio-ca"))["serialNumber"]
    data = (
        foreign_ca()
        if tamper == "foreign"
        else {"ca-cert.pem": base64.b64encode(b"not a certificate").decode()}
    )
    await kube.patch_merge(SECRETS, "istio-ca-cacerts", {"data": data}, namespace=namespace)

    async def warned() -> list[dict[str, Any]]:
        return [e for e in await warnings(kube, namespace, "istio-ca") if e["reason"] == reason]

    events = await eventually(warned, within=20, message=f"a Warning Event {reason}")
    assert found in events[0]["message"]
    assert f"{namespace}/istio-ca-cacerts" in events[0]["message"]
    await eventually(lambda: reissued(kube, namespace, serial), within=20, message="re-issued")
