"""What the end-to-end tests read back from the bus and the certificates: the stream and the
ledger (as the `issuer` NATS user), one key and one signature per issuance, fingerprints and
`openssl verify`. `e2e_testing` holds the stack, the clusters and the pods.
"""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import nats.errors
import nats.js.errors
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from e2e.e2e_testing import ISSUANCE_ANNOTATION, ISSUED_SECRET, KEY_SECRET, Finished, World, decoded

from devstack.stack import Stack
from shared.bus import Bus
from shared.bus.ledger import Ledger, LedgerEntry
from shared.pki import fingerprint, load_private_key

# --- the bus --------------------------------------------------------------------------------


@asynccontextmanager
async def issuer_bus(stack: Stack) -> AsyncIterator[Bus]:
    """A bus connection as the `issuer` NATS user (who may read every stream)."""
    settings = stack.nats_settings(
        "issuer",
        request_timeout=2.0,
        publish_deadline=10.0,
        connect_deadline=10.0,
        reconnect_wait=0.2,
    )
    async with Bus.connect(settings) as bus:
        yield bus


T = TypeVar("T")

# What a JetStream API request can meet while a NATS cluster re-forms after a node died (the
# meta leader among them): no answer within the request timeout, no responder yet, or a
# connection to the dead node closing under it.
SETTLING = (
    nats.errors.TimeoutError,
    nats.errors.NoRespondersError,
    nats.errors.ConnectionClosedError,
    nats.js.errors.ServiceUnavailableError,
)


async def settled(stack: Stack, read: Callable[[Bus], Awaitable[T]], *, within: float = 30) -> T:
    """`read` over a fresh issuer connection, tried again (on a new connection) while the NATS
    cluster is settling, until `within` seconds have passed; then its last error is raised."""
    deadline = time.monotonic() + within
    while True:
        try:
            async with issuer_bus(stack) as bus:
                return await read(bus)
        except SETTLING:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


async def read_stream(bus: Bus, stream: str, subjects: tuple[str, ...]) -> list[LedgerEntry]:
    """Every message of `stream` from its first sequence (all subjects), in order."""
    reader = Ledger(bus.connection, stream=stream, subjects=subjects)
    return [entry async for entry in reader.read()]


async def ledger(stack: Stack) -> list[dict[str, Any]]:
    """Every signature the issuer recorded (MESHTRUST_LEDGER), as JSON objects."""
    entries = await settled(
        stack, lambda bus: read_stream(bus, "MESHTRUST_LEDGER", ("meshtrust.ledger.>",))
    )
    return [json.loads(e.data) for e in entries]


async def events(stack: Stack) -> list[dict[str, Any]]:
    """Every event of the MESHTRUST stream, as JSON objects (with `_subject`, `_seq`)."""
    entries = await settled(stack, lambda bus: read_stream(bus, "MESHTRUST", ("meshtrust.v1.>",)))
    return [{**json.loads(e.data), "_subject": e.subject, "_seq": e.sequence} for e in entries]


# --- keys -----------------------------------------------------------------------------------


def key_fingerprint(key_pem: bytes) -> str:
    """SHA-256 of the public key (SPKI) of a PEM private key: what the ledger records."""
    return fingerprint(load_private_key(key_pem).public_key())


def csr_fingerprint(csr_pem: str | bytes) -> str:
    data = csr_pem.encode() if isinstance(csr_pem, str) else csr_pem
    return fingerprint(x509.load_pem_x509_csr(data).public_key())


def serial_of(cert_pem: bytes) -> int:
    return x509.load_pem_x509_certificates(cert_pem)[0].serial_number


def one_signature_per_issuance(entries: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The ledger by issuance; AssertionError if any issuance has more than one entry."""
    by_issuance: dict[str, list[dict[str, Any]]] = {}
    for entry in entries:
        by_issuance.setdefault(entry["issuance"], []).append(entry)
    doubles = {i: [e["serial_number"] for e in es] for i, es in by_issuance.items() if len(es) != 1}
    assert not doubles, f"issuances signed more than once (serials): {doubles}"
    return {i: es[0] for i, es in by_issuance.items()}


def openssl_verify(root: bytes, data: Mapping[str, bytes]) -> subprocess.CompletedProcess[str]:
    """`openssl verify` of a cacerts bundle against `root` (chain as untrusted intermediates)."""
    openssl = shutil.which("openssl")
    assert openssl is not None, "openssl is needed for the independent chain check"
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        (directory / "root.pem").write_bytes(root)
        (directory / "chain.pem").write_bytes(data["cert-chain.pem"])
        (directory / "cert.pem").write_bytes(data["ca-cert.pem"])
        return subprocess.run(
            [openssl, "verify", "-CAfile", str(directory / "root.pem"), "-untrusted",
             str(directory / "chain.pem"), str(directory / "cert.pem")],
            capture_output=True, text=True, check=False, timeout=60,
        )  # fmt: skip


# --- one issuance per round: one key, one signature ------------------------------------------


async def known_issuances(stack: Stack) -> set[str]:
    """Every issuance the ledger or the stream has heard of so far."""
    return {e["issuance"] for e in await ledger(stack)} | {
        e["issuance"] for e in await events(stack)
    }


async def check_one_key_and_one_signature(
    world: World, finished: Mapping[str, Finished], *, known: set[str]
) -> dict[str, dict[str, Any]]:
    """For every cluster, since `known`: exactly one issuance was started (every CSR on the bus
    is of it) and signed once (one ledger entry); every CSR sent for it carries one and the same
    public key, the one the ledger recorded; the final cacerts holds that key and the signed
    serial, and the key Secret is gone. No issuance since `known` has two ledger entries.
    Returns the ledger entry of each cluster's final issuance.

    Reads the ledger only once the issuer has finished with every CSR delivered to it: a
    second signature made by a late handler would otherwise be appended after the check."""
    await wait_issuer_idle(world.stack, within=60)
    entries = await ledger(world.stack)
    # Issuances of earlier rounds were judged by their own test.
    by_issuance = one_signature_per_issuance([e for e in entries if e["issuance"] not in known])
    bus_events = await events(world.stack)
    final: dict[str, dict[str, Any]] = {}
    for cluster, done in finished.items():
        signed = [e for e in entries if e["cluster"] == cluster and e["issuance"] not in known]
        assert [e["issuance"] for e in signed] == [done.issuance], (
            f"{cluster}: signatures since the round began {signed}, expected one for "
            f"{done.issuance}"
        )
        entry = by_issuance[done.issuance]
        assert int(entry["serial_number"], 16) == int(done.serial, 16)
        csrs = [
            e
            for e in bus_events
            if e["type"] == "csr.requested"
            and e["cluster"] == cluster
            and e["issuance"] not in known
        ]
        assert csrs, f"{cluster}: no csr.requested on the bus for {done.issuance}"
        assert {e["issuance"] for e in csrs} == {done.issuance}, (
            f"{cluster}: CSRs of several issuances in one round: {[e['issuance'] for e in csrs]}"
        )
        keys = {csr_fingerprint(e["data"]["csr_pem"]) for e in csrs}
        assert keys == {entry["csr_public_key_fingerprint"]}, (
            f"{cluster}: {len(csrs)} CSRs for {done.issuance} carry keys {keys}, "
            f"ledger {entry['csr_public_key_fingerprint']}"
        )
        secret = await world.secret_object(cluster, ISSUED_SECRET)
        assert secret is not None
        cacerts = decoded(secret)
        assert key_fingerprint(cacerts["ca-key.pem"]) == entry["csr_public_key_fingerprint"]
        assert serial_of(cacerts["ca-cert.pem"]) == int(entry["serial_number"], 16)
        annotations = secret["metadata"].get("annotations") or {}
        assert annotations.get(ISSUANCE_ANNOTATION) == done.issuance
        # Until ISSUED the key lives in the key Secret; after it, only in cacerts.
        assert await world.secret_object(cluster, KEY_SECRET) is None
        final[cluster] = entry
    return final


async def wait_csr_stored(stack: Stack, cluster: str, issuance: str, *, within: float) -> None:
    """Poll the MESHTRUST stream until a csr.requested of `issuance` is stored in it."""
    deadline = time.monotonic() + within
    subjects = (f"meshtrust.v1.{cluster}.csr.requested",)
    while True:
        entries = await settled(stack, lambda bus: read_stream(bus, "MESHTRUST", subjects))
        if any(json.loads(e.data)["issuance"] == issuance for e in entries):
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"no csr.requested of {issuance} stored within {within}s")
        await asyncio.sleep(0.05)


async def wait_issuer_idle(stack: Stack, *, within: float) -> None:
    """Poll until the issuer's CSR consumers (one per cluster, `csr-<cluster>`) have nothing
    pending and nothing unacknowledged."""
    deadline = time.monotonic() + within
    while True:
        infos = await settled(stack, lambda bus: bus.connection.js.consumers_info("MESHTRUST"))
        csrs = [i for i in infos if (i.name or "").startswith("csr-")]
        pending = sum(i.num_pending or 0 for i in csrs)
        unacked = sum(i.num_ack_pending or 0 for i in csrs)
        if pending == 0 and unacked == 0:
            return
        if time.monotonic() > deadline:
            raise AssertionError(
                f"the issuer still has CSRs after {within}s: {pending} pending, "
                f"{unacked} unacknowledged"
            )
        await asyncio.sleep(0.05)


def private_key_forms(cluster: str, key_pem: bytes) -> list[tuple[str, bytes]]:
    """The ways a private key could be written into a message: its PEM body (whole, and line
    by line), its DER (PKCS#8 and the traditional form), raw and base64, and its secret
    number in hex."""
    key = load_private_key(key_pem)
    body = [line for line in key_pem.splitlines() if line and not line.startswith(b"-----")]
    forms = [(f"{cluster} ca-key.pem body", b"".join(body))]
    # Every full 64-character line (the last one may be short and too common to be telling).
    forms += [
        (f"{cluster} ca-key.pem line {i}", line) for i, line in enumerate(body) if len(line) == 64
    ]
    for label, fmt in (
        ("PKCS#8", serialization.PrivateFormat.PKCS8),
        ("traditional", serialization.PrivateFormat.TraditionalOpenSSL),
    ):
        der = key.private_bytes(serialization.Encoding.DER, fmt, serialization.NoEncryption())
        forms += [
            (f"{cluster} {label} DER", der),
            (f"{cluster} {label} DER, base64", base64.b64encode(der)),
            (f"{cluster} {label} DER, url-safe base64", base64.urlsafe_b64encode(der).rstrip(b"=")),
            (f"{cluster} {label} DER, hex", der.hex().encode()),
        ]
    if isinstance(key, rsa.RSAPrivateKey):
        secret = key.private_numbers().d
    else:
        secret = key.private_numbers().private_value
    forms.append((f"{cluster} private number, hex", f"{secret:x}".encode()))
    return forms
