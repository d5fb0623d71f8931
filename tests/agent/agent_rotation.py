"""A root rotation's CAs, made at test time, and the issuer's answers for each step of it
(the table of docs/rotation.md), built here with `shared.pki` as the issuer would: the agent's
tests judge and install them without the issuer's rotation logic.

- `old_root`/`new_root`: root-only `SigningCA`s (they can cross-sign); `old`/`new`: the signing
  intermediates below them; `cross`: the new root cross-signed by the old one;
- `attacker_root`/`attacker`: a CA nobody pinned, for the forged answers;
- `StepIssuer`: answers csr.requested on the bus as the issuer does for the CSR's step.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from pki.pki_testing import Issuer, key_pem, make_ca, pem

from shared.api.v1alpha2 import IssuedCertificate
from shared.bus import Bus, Delivery
from shared.events import CertificateIssued, CertificateIssuedData, CsrRequested, Event
from shared.k8s.client import KubeClient
from shared.k8s.resources import ISSUED_CERTIFICATES
from shared.pki import (
    KeyAlgorithm,
    KeySpec,
    SigningCA,
    cross_sign,
    generate_private_key,
    load_signing_ca,
    serial_hex,
    sign_intermediate,
)
from shared.runtime.clock import utcnow

P256 = KeySpec(algorithm=KeyAlgorithm.ECDSA, size=256)


def cert_pem(*certificates: x509.Certificate) -> str:
    return "".join(c.public_bytes(serialization.Encoding.PEM).decode() for c in certificates)


def _window() -> tuple[dt.datetime, dt.datetime]:
    now = utcnow()
    return now - dt.timedelta(days=1), now + dt.timedelta(days=30)


def make_root(cn: str) -> SigningCA:
    """A self-signed root as a `SigningCA` of its own (what `cross_sign` signs with)."""
    not_before, not_after = _window()
    root = make_ca(
        cn=cn, private_key=generate_private_key(P256), not_before=not_before, not_after=not_after
    )
    data = {
        "ca-cert.pem": pem(root.cert),
        "ca-key.pem": key_pem(root.key),
        "cert-chain.pem": pem(root.cert),
        "root-cert.pem": pem(root.cert),
    }
    return load_signing_ca(data, now=utcnow())


def make_signer(root: SigningCA, cn: str) -> SigningCA:
    """A signing intermediate below `root`."""
    not_before, not_after = _window()
    signer = make_ca(
        cn=cn,
        private_key=generate_private_key(P256),
        parent=Issuer(root.cert, root.key),
        not_before=not_before,
        not_after=not_after,
    )
    data = {
        "ca-cert.pem": pem(signer.cert),
        "ca-key.pem": key_pem(signer.key),
        "cert-chain.pem": pem(signer.cert, root.cert),
        "root-cert.pem": pem(root.cert),
    }
    return load_signing_ca(data, now=utcnow())


@dataclass(frozen=True)
class Rotation:
    old_root: SigningCA
    old: SigningCA
    new_root: SigningCA
    new: SigningCA
    cross: x509.Certificate
    attacker_root: SigningCA
    attacker: SigningCA

    @property
    def pinned_pem(self) -> str:
        """The trust bundle of a cluster before the rotation: the old root only."""
        return cert_pem(self.old_root.cert)

    def step(self, name: str) -> tuple[SigningCA, str, str | None]:
        """(signing CA, root_cert_pem, cross_signed_pem) of a step (docs/rotation.md)."""
        both = cert_pem(self.old_root.cert, self.new_root.cert)
        cross = cert_pem(self.cross)
        table: dict[str, tuple[SigningCA, str, str | None]] = {
            "": (self.old, cert_pem(self.old_root.cert), None),
            "add": (self.old, both, cross),
            "move": (self.new, both, cross),
            "drop": (self.new, cert_pem(self.new_root.cert), cross),
            "back": (self.old, both, cross),
            "undo": (self.old, cert_pem(self.old_root.cert), None),
        }
        return table[name]


def make_rotation() -> Rotation:
    old_root, new_root, attacker_root = (
        make_root("old-root"),
        make_root("new-root"),
        make_root("attacker-root"),
    )
    return Rotation(
        old_root=old_root,
        old=make_signer(old_root, "old-signer"),
        new_root=new_root,
        new=make_signer(new_root, "new-signer"),
        cross=cross_sign(new_root.cert, by=old_root, now=utcnow()),
        attacker_root=attacker_root,
        attacker=make_signer(attacker_root, "attacker-signer"),
    )


def answer(
    csr: x509.CertificateSigningRequest,
    *,
    ca: SigningCA,
    roots_pem: str,
    cross_pem: str | None,
    hosts: list[str],
    org: str,
    name: str,
    ttl: dt.timedelta,
    generation: int = 1,
    attempt: int = 1,
) -> CertificateIssuedData:
    """The certificate.issued data of `ca` signing `csr`, with the roots and cross certificate
    given (the chain ends at `ca`'s own root, whatever `roots_pem` says)."""
    issued = sign_intermediate(csr, ca, hosts=hosts, org=org, name=name, ttl=ttl, now=utcnow())
    return CertificateIssuedData(
        name=name,
        declaration_generation=generation,
        attempt=attempt,
        serial_number=serial_hex(issued.serial),
        certificate_pem=issued.certificate_pem.decode(),
        ca_chain_pem=issued.chain_pem[len(issued.certificate_pem) :].decode(),
        root_cert_pem=roots_pem,
        not_before=issued.not_before,
        not_after=issued.not_after,
        cross_signed_pem=cross_pem,
    )


@dataclass
class StepIssuer:
    """Answers csr.requested as the issuer does for the step its trust_epoch names (the last
    dot-separated part; none: outside a rotation). `silent`: no answer."""

    bus: Bus
    kube: KubeClient
    rot: Rotation
    silent: bool = False
    requests: list[CsrRequested] = field(default_factory=list)

    async def __call__(self, event: Event, delivery: Delivery) -> None:
        assert isinstance(event, CsrRequested)
        self.requests.append(event)
        if not self.silent:
            await self.bus.publish(await self.answer(event))

    async def answer(
        self,
        event: CsrRequested,
        *,
        step: str | None = None,
        signer: SigningCA | None = None,
        roots: str | None = None,
        cross: str | None = "",
    ) -> CertificateIssued:
        data = event.data
        listed = await self.kube.list(
            ISSUED_CERTIFICATES, field_selector=f"metadata.name={data.name}"
        )
        spec = IssuedCertificate.from_object(listed.items[0]).spec
        if step is None:
            step = (data.trust_epoch or "").rpartition(".")[2]
        ca, step_roots, step_cross = self.rot.step(step)
        issued = answer(
            x509.load_pem_x509_csr(data.csr_pem.encode()),
            ca=signer or ca,
            roots_pem=roots or step_roots,
            cross_pem=step_cross if cross == "" else cross,
            hosts=list(spec.hosts),
            org=spec.org,
            name=data.name,
            ttl=spec.cert_options.lifetime,
            generation=data.declaration_generation,
            attempt=data.attempt,
        )
        return CertificateIssued(
            source="issuer/test", cluster=event.cluster, issuance=event.issuance, data=issued
        )

    def epochs(self) -> list[str | None]:
        return [r.data.trust_epoch for r in self.requests]
