"""Benchmark of `shared.pki`: key generation, CSR check + sign throughput, sign vs bare signing.

Run: ``.venv/bin/python bench/pki.py`` (about 40 s on 2 cores; ``--quick`` for a smoke run).

It prints

1. key generation per algorithm (median of several runs: RSA is slow and erratic);
2. CSR check + sign throughput for each signing-key type (the issuer's hot path per request);
3. the ratio of `sign_intermediate`'s throughput to a bare `cryptography` ``CertificateBuilder``
   producing the same certificate content (same subject, extensions, validity, signing key) from
   the same CSR, measured in the same run in interleaved rounds so machine noise hits both alike.
   A ratio of 1.00 means our checks, caching and PEM/fingerprint work cost nothing next to the
   signature; the target is >= 0.90.

The last line, ``sign/raw throughput ratio: R``, is the worst (lowest) ratio over all signing-key
types, so a regression on any one of them shows. Absolute times depend on the machine; the ratios
are what to compare between runs. The signing CAs are made at run time; nothing is written to disk.
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import NameOID

from shared.pki import (
    KeyAlgorithm,
    KeyPolicy,
    KeySpec,
    PrivateKey,
    SigningCA,
    build_csr,
    check_csr,
    create_root_ca,
    generate_private_key,
    load_signing_ca,
    sign_intermediate,
)
from shared.pki.authority import CA_KEY_USAGE

NOW = dt.datetime(2026, 6, 1, 12, 0, tzinfo=dt.UTC)
TTL = dt.timedelta(days=90)
ORG = "solo.io"
NAME = "istio-cacerts"
HOSTS = ["spiffe://cluster.local/ns/istio-system/sa/citadel", "istiod.istio-system.svc"]
SPECS = [
    KeySpec(algorithm=KeyAlgorithm.RSA, size=2048),
    KeySpec(algorithm=KeyAlgorithm.RSA, size=3072),
    KeySpec(algorithm=KeyAlgorithm.RSA, size=4096),
    KeySpec(algorithm=KeyAlgorithm.ECDSA, size=256),
    KeySpec(algorithm=KeyAlgorithm.ECDSA, size=384),
]


def label(spec: KeySpec) -> str:
    return f"RSA-{spec.size}" if spec.algorithm is KeyAlgorithm.RSA else f"P-{spec.size}"


@dataclass(frozen=True, kw_only=True)
class Signer:
    spec: KeySpec
    ca: SigningCA
    csr_pem: bytes
    csr: x509.CertificateSigningRequest
    ca_ski: x509.SubjectKeyIdentifier


def make_signer(spec: KeySpec, agent_key: PrivateKey) -> Signer:
    """A self-signed root of ``spec`` (made as the demo makes its own), loaded as our issuer would
    load it."""
    root = create_root_ca(
        org=ORG,
        common_name=f"bench root {label(spec)}",
        ttl=dt.timedelta(days=3650),
        now=NOW,
        spec=spec,
    )
    ca = load_signing_ca(root, now=NOW)
    csr_pem = build_csr(agent_key, org=ORG, name=NAME, hosts=HOSTS)
    csr = check_csr(csr_pem, hosts=HOSTS, org=ORG, policy=KeyPolicy())
    ski = ca.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    return Signer(spec=spec, ca=ca, csr_pem=csr_pem, csr=csr, ca_ski=ski)


def ours(signer: Signer) -> None:
    sign_intermediate(signer.csr, signer.ca, hosts=HOSTS, org=ORG, name=NAME, ttl=TTL, now=NOW)


def raw(signer: Signer) -> None:
    """The same certificate with nothing but cryptography: no checks, no caching, no PEM.

    The signer's SKI is looked up once, outside (as a careful bare implementation would), so the
    comparison does not flatter us.
    """
    ca = signer.ca
    public_key = signer.csr.public_key()
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORG),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, NAME),
        ]
    )
    digest = hashes.SHA384() if signer.spec.size == 384 else hashes.SHA256()
    (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca.cert.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(minutes=5))
        .not_valid_after(NOW + TTL)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(CA_KEY_USAGE, critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(signer.ca_ski),
            critical=False,
        )
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.UniformResourceIdentifier(HOSTS[0]), x509.DNSName(HOSTS[1])]
            ),
            critical=False,
        )
        .sign(ca.key, digest)
    )


def check_and_sign(signer: Signer) -> None:
    csr = check_csr(signer.csr_pem, hosts=HOSTS, org=ORG, policy=KeyPolicy())
    sign_intermediate(csr, signer.ca, hosts=HOSTS, org=ORG, name=NAME, ttl=TTL, now=NOW)


def timed(action: Callable[[], object], *, count: int) -> float:
    """CPU seconds of this process for ``count`` calls: other load on the machine does not count."""
    started = time.process_time()
    for _ in range(count):
        action()
    return time.process_time() - started


def batch_size(action: Callable[[], object], *, seconds: float) -> int:
    """How many calls take about ``seconds``."""
    once = timed(action, count=3) / 3
    return max(3, int(seconds / once))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer runs: a smoke test")
    quick = parser.parse_args().quick
    scale = 0.2 if quick else 1.0

    print("key generation (median CPU time per key):")
    for spec in SPECS:
        runs = 3 if quick else (5 if spec.algorithm is KeyAlgorithm.RSA else 200)
        generate = functools.partial(generate_private_key, spec)
        times = [timed(generate, count=1) for _ in range(runs)]
        median = statistics.median(times)
        print(
            f"  {label(spec):9} {median * 1000:9.2f} ms   {1 / median:9.1f} keys/s   ({runs} runs)"
        )

    agent_key = generate_private_key(KeySpec(algorithm=KeyAlgorithm.ECDSA, size=256))
    signers = [make_signer(spec, agent_key) for spec in SPECS]

    print("CSR check + sign throughput per signing-key type (agent key P-256):")
    for signer in signers:
        action = functools.partial(check_and_sign, signer)
        count = batch_size(action, seconds=1.0 * scale)
        elapsed = timed(action, count=count)
        print(f"  {label(signer.spec):9} {count / elapsed:9.1f} checked+signed/s   ({count} runs)")

    print("sign vs bare cryptography CertificateBuilder, same certificate (interleaved rounds):")
    ratios: list[float] = []
    for signer in signers:
        ours_action = functools.partial(ours, signer)
        raw_action = functools.partial(raw, signer)
        count = batch_size(raw_action, seconds=0.1 * scale)
        round_ratios: list[float] = []
        ours_total = raw_total = 0.0
        for _ in range(5 if quick else 21):
            ours_time = timed(ours_action, count=count)
            raw_time = timed(raw_action, count=count)
            ours_total += ours_time
            raw_total += raw_time
            round_ratios.append(raw_time / ours_time)  # throughput ratio: ours / raw
        ratio = statistics.median(round_ratios)
        ratios.append(ratio)
        rounds = len(round_ratios)
        print(
            f"  {label(signer.spec):9} ours {rounds * count / ours_total:9.1f}/s   "
            f"raw {rounds * count / raw_total:9.1f}/s   ratio {ratio:.2f}"
        )
    print(f"sign/raw throughput ratio: {min(ratios):.2f}")


if __name__ == "__main__":
    main()
