"""Hard cuts are not silent: a signing Secret replaced in place under another root is refused
(`SigningRootChanged`) unless a rotation covers it or the Secret accepts the new root."""

from __future__ import annotations

from pathlib import Path

from cryptography import x509

from issuer.issuer_testing import (
    SIGNING_SECRET,
    SYSTEM_NAMESPACE,
    Hierarchy,
    declaration,
    running,
    world,
)
from services.issuer.roots import ACCEPT_ROOT_ANNOTATION, root_changed
from shared.api import reasons
from shared.api.meta import ObjectKey
from shared.bus import NatsSettings
from shared.k8s.resources import SECRETS
from shared.pki import fingerprint

SECRET = ObjectKey(SYSTEM_NAMESPACE, SIGNING_SECRET)
OLD, NEW = "a" * 64, "b" * 64


def annotated(value: str) -> dict[str, object]:
    return {"metadata": {"annotations": {ACCEPT_ROOT_ANNOTATION: value}}}


def test_a_secret_first_seen_or_under_the_same_root_signs() -> None:
    assert root_changed(SECRET, None, NEW, {}) is None
    assert root_changed(SECRET, NEW, NEW, {}) is None


def test_another_root_is_refused_with_how_to_rotate_and_how_to_accept() -> None:
    finding = root_changed(SECRET, OLD, NEW, {})
    assert finding is not None
    assert finding.reason == reasons.SIGNING_ROOT_CHANGED
    assert "meshtrust rotate start" in finding.message
    assert "docs/rotation.md" in finding.message
    assert f"{ACCEPT_ROOT_ANNOTATION}={NEW}" in finding.message


def test_the_annotation_accepts_exactly_the_new_root() -> None:
    assert root_changed(SECRET, OLD, NEW, annotated(NEW)) is None
    assert root_changed(SECRET, OLD, NEW, annotated(NEW.upper())) is None
    assert root_changed(SECRET, OLD, NEW, annotated(OLD)) is not None
    assert root_changed(SECRET, OLD, NEW, annotated("c" * 64)) is not None


def root_of(pem: str) -> x509.Name:
    return x509.load_pem_x509_certificates(pem.encode())[-1].subject


async def test_a_secret_replaced_under_a_new_root_is_refused_until_accepted(
    tmp_path: Path, nats_settings: NatsSettings
) -> None:
    async with world(tmp_path, nats_settings, levels=1) as w, running(w.settings()):
        decl = await w.create(declaration("east", "istiod"))
        agent = w.agent("east")
        first = await agent.send(agent.request(decl))
        assert root_of((await w.answers.issued(first.issuance)).data.root_cert_pem) == (
            w.hierarchy.root.cert.subject
        )

        new = Hierarchy.make(levels=1)
        await w.put_signing_secret(new)
        cut = await agent.send(agent.request(decl))
        denied = await w.answers.denied(cut.issuance)
        assert denied.data.reason == reasons.SIGNING_ROOT_CHANGED
        assert "meshtrust rotate start" in denied.data.message

        raw = await w.kube.get(SECRETS, SIGNING_SECRET, namespace=SYSTEM_NAMESPACE)
        raw["metadata"].setdefault("annotations", {})[ACCEPT_ROOT_ANNOTATION] = fingerprint(
            new.root.cert
        )
        await w.kube.replace(SECRETS, raw)
        accepted = await agent.send(agent.request(decl))
        issued = await w.answers.issued(accepted.issuance)
        assert root_of(issued.data.root_cert_pem) == new.root.cert.subject
