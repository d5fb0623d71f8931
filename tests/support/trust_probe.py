"""The trust probe: would a workload of one cluster accept a workload of another, right now?

A rotation is safe when, at every moment, a workload certificate issued from any cluster's
intermediate (Istio's `cacerts`: `ca-cert.pem`, `ca-key.pem`, `cert-chain.pem`) verifies against
every cluster's `root-cert.pem`, which is what the workloads there trust. The probe checks
exactly that, from the outside, at each `TrustProbe.sample`:

- for each cluster, it issues a fresh short-lived leaf from that cluster's current intermediate
  (a SPIFFE workload certificate, serverAuth + clientAuth, as istiod would) and verifies leaf +
  `cert-chain.pem` against every cluster's `root-cert.pem` (all the certificates in it are
  anchors), with `cryptography.x509.verification` (the WebPKI profile, client verifier: no name
  to check, only the path, validity, key usages and signatures);
- it keeps every intermediate each cluster had *before* (its key, chain and the last leaf it
  issued: a workload that was not restarted holds such a leaf) and verifies that leaf too, at
  every later sample. Whether a failure of such a *previous* intermediate counts is decided at
  the end (`TrustProbe.failures`): it counts until its retire time, when no workload holding one
  of its leaves may exist any more: `retire_times` gives it as the moment the cluster finished
  (bounced) onto the next intermediate plus the workload certificate lifetime.

Every verification is recorded as a `Sample` (time, source cluster and intermediate, target
cluster, ok, why); nothing is summarised away. A cluster without a readable `cacerts` is a
failed sample (its workloads would have no CA). The time of a sample is taken after every Secret
was read, so a Secret written during a read is never judged by an earlier clock.

Independent of the code under test on purpose: only `cryptography`, nothing of `shared.pki`.

Deliberately not here: reading the Secrets (the caller gives the data: `sample_continuously`
takes an async reader), and intermediates with URI name constraints, which
`cryptography.x509.verification` refuses ("unsupported name constraint"): such a cluster shows
as failed samples, never as a silent pass.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import itertools
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

__all__ = [
    "Cacerts",
    "Intermediate",
    "Sample",
    "TrustProbe",
    "retire_times",
    "sample_continuously",
]

CacertsData = Mapping[str, bytes]
"""A `cacerts` Secret's data, decoded: file name -> bytes."""

LEAF_LIFETIME = dt.timedelta(hours=1)
"""Longer than any run: a kept leaf of a previous intermediate must not expire on its own."""

_LEAF_USAGE = x509.KeyUsage(
    digital_signature=True,
    content_commitment=False,
    key_encipherment=True,
    data_encipherment=False,
    key_agreement=False,
    key_cert_sign=False,
    crl_sign=False,
    encipher_only=False,
    decipher_only=False,
)


@dataclass(frozen=True, slots=True)
class Cacerts:
    """One cluster's `cacerts`, parsed."""

    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
    chain: tuple[x509.Certificate, ...]
    roots: tuple[x509.Certificate, ...]

    @classmethod
    def parse(cls, data: CacertsData) -> Cacerts:
        """Raises ValueError naming what is missing or unreadable."""
        missing = [
            f
            for f in ("ca-cert.pem", "ca-key.pem", "cert-chain.pem", "root-cert.pem")
            if not data.get(f)
        ]
        if missing:
            raise ValueError(f"cacerts lacks {', '.join(missing)}")
        key = load_pem_private_key(data["ca-key.pem"], password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
            raise ValueError(f"ca-key.pem holds a {type(key).__name__}, not RSA or ECDSA")
        return cls(
            cert=x509.load_pem_x509_certificate(data["ca-cert.pem"]),
            key=key,
            chain=tuple(x509.load_pem_x509_certificates(data["cert-chain.pem"])),
            roots=tuple(x509.load_pem_x509_certificates(data["root-cert.pem"])),
        )

    @property
    def serial(self) -> str:
        return f"{self.cert.serial_number:x}"


@dataclass(slots=True)
class Intermediate:
    """One intermediate of one cluster as the probe saw it, with the last leaf it issued."""

    cluster: str
    cacerts: Cacerts
    first_seen: dt.datetime
    superseded: dt.datetime | None = None
    """When the probe first saw the cluster's next intermediate (None: still current)."""
    leaf: x509.Certificate | None = None
    data: dict[str, bytes] = field(default_factory=dict, repr=False)
    """The Secret data it was parsed from."""

    @property
    def serial(self) -> str:
        return self.cacerts.serial


@dataclass(frozen=True, slots=True)
class Sample:
    """One verification: a leaf of `source`'s intermediate `serial` against `target`'s roots."""

    time: dt.datetime
    source: str
    serial: str
    current: bool
    target: str
    ok: bool
    why: str = ""

    def __str__(self) -> str:
        which = "current" if self.current else "previous"
        verdict = "ok" if self.ok else f"FAILED: {self.why}"
        return (
            f"{self.time.isoformat(timespec='milliseconds')} {self.source} {which} "
            f"{self.serial[:10]} -> {self.target}: {verdict}"
        )


@dataclass
class TrustProbe:
    """Samples the mutual trust of a fleet's `cacerts` (see the module docstring)."""

    trust_domain: str = "cluster.local"
    samples: list[Sample] = field(default_factory=list)
    history: dict[str, list[Intermediate]] = field(default_factory=dict)
    """Per cluster, every intermediate seen, in order; the last one is current."""
    _leaf_key: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP256R1()), repr=False
    )

    def sample(self, fleet: Mapping[str, CacertsData | None], *, now: dt.datetime) -> list[Sample]:
        """Verify every cluster's leaves against every cluster's roots; record and return."""
        if now.tzinfo is None:
            raise ValueError("now must be timezone-aware")
        roots: dict[str, tuple[x509.Certificate, ...]] = {}
        taken: list[Sample] = []
        for cluster, data in fleet.items():
            problem = self._observe(cluster, data, now=now)
            if problem is not None:
                taken.append(Sample(now, cluster, "", True, cluster, False, problem))
            else:
                roots[cluster] = self.history[cluster][-1].cacerts.roots
        for cluster in roots:
            for intermediate in self.history[cluster]:
                current = intermediate.superseded is None
                if current:
                    intermediate.leaf = self._issue_leaf(intermediate, now=now)
                assert intermediate.leaf is not None, "every intermediate issued when current"
                for target, anchors in roots.items():
                    why = _verify(intermediate, anchors, now=now)
                    taken.append(
                        Sample(
                            now, cluster, intermediate.serial, current, target, why is None,
                            why or "",
                        )
                    )  # fmt: skip
        self.samples.extend(taken)
        return taken

    def failures(self, *, retired: Mapping[str, dt.datetime] | None = None) -> list[Sample]:
        """The failed samples that count: every failure of a current intermediate (or of a
        missing `cacerts`); a previous intermediate's failure unless it was sampled at or after
        that intermediate's retire time, `retired[serial]` (no entry: it never retires)."""
        retired = retired or {}
        counted = []
        for sample in self.samples:
            if sample.ok:
                continue
            gone = retired.get(sample.serial)
            if not sample.current and gone is not None and sample.time >= gone:
                continue
            counted.append(sample)
        return counted

    def sequence(self, cluster: str) -> list[str]:
        """The serials of `cluster`'s intermediates, in the order seen."""
        return [i.serial for i in self.history.get(cluster, [])]

    def _observe(self, cluster: str, data: CacertsData | None, *, now: dt.datetime) -> str | None:
        """Note `cluster`'s current intermediate; the reason it has none usable, if so."""
        if data is None:
            return "no cacerts Secret"
        seen = self.history.setdefault(cluster, [])
        if seen and seen[-1].data == data:  # parsing an RSA key costs tens of ms: only if new
            return None
        try:
            cacerts = Cacerts.parse(data)
        except ValueError as error:
            return f"unreadable cacerts: {error}"
        if seen and seen[-1].serial == cacerts.serial:  # the same intermediate, rewritten:
            seen[-1].cacerts, seen[-1].data = cacerts, dict(data)  # its roots may differ
            return None
        if seen:
            seen[-1].superseded = now
        seen.append(Intermediate(cluster, cacerts, first_seen=now, data=dict(data)))
        return None

    def _issue_leaf(self, intermediate: Intermediate, *, now: dt.datetime) -> x509.Certificate:
        """A workload certificate as istiod issues it: URI SAN only, empty subject."""
        ca = intermediate.cacerts
        spiffe = f"spiffe://{self.trust_domain}/ns/probe/sa/{intermediate.cluster}"
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([]))
            .issuer_name(ca.cert.subject)
            .public_key(self._leaf_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=1))
            .not_valid_after(now + LEAF_LIFETIME)
            .add_extension(
                x509.SubjectAlternativeName([x509.UniformResourceIdentifier(spiffe)]),
                critical=True,  # an empty subject makes the SAN critical (RFC 5280 4.2.1.6)
            )
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_LEAF_USAGE, critical=True)
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.cert.public_key()),
                critical=False,
            )
        )
        return builder.sign(ca.key, _hash_for(ca.key))


def _hash_for(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> hashes.HashAlgorithm:
    if isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.key_size >= 384:
        return hashes.SHA384()
    return hashes.SHA256()


def _verify(
    intermediate: Intermediate, anchors: tuple[x509.Certificate, ...], *, now: dt.datetime
) -> str | None:
    """None if the leaf and its chain verify against `anchors` at `now`, else why not."""
    assert intermediate.leaf is not None
    verifier = PolicyBuilder().store(Store(list(anchors))).time(now).build_client_verifier()
    try:
        verifier.verify(intermediate.leaf, list(intermediate.cacerts.chain))
    except VerificationError as error:
        issuer = _common_name(intermediate.cacerts.cert.issuer)
        trusted = ", ".join(_common_name(root.subject) for root in anchors)
        return f"intermediate issued by '{issuer}' not trusted by roots [{trusted}]: {error}"
    return None


def _common_name(name: x509.Name) -> str:
    names = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[0].value) if names else name.rfc4514_string()


def retire_times(
    probe: TrustProbe,
    finished: Iterable[tuple[str, str, dt.datetime]],
    *,
    lifetime: dt.timedelta,
) -> dict[str, dt.datetime]:
    """When each previous intermediate's leaves are gone: `lifetime` after its cluster
    finished (every pod bounced) onto the intermediate the probe saw next.

    `finished`: (cluster, serial, time) of each FINISHED the cluster reported (e.g. its
    `status.changed` events; serials in hex, any case); the earliest time per serial counts.
    An intermediate whose successor never finished gets no retire time (it never retires)."""
    first: dict[tuple[str, int], dt.datetime] = {}
    for cluster, serial, at in finished:
        key = (cluster, int(serial, 16))
        first[key] = min(at, first.get(key, at))
    out: dict[str, dt.datetime] = {}
    for cluster, seen in probe.history.items():
        for previous, following in itertools.pairwise(seen):
            done = first.get((cluster, int(following.serial, 16)))
            if done is not None:
                out[previous.serial] = done + lifetime
    return out


async def sample_continuously(
    probe: TrustProbe,
    read: Callable[[], Awaitable[Mapping[str, CacertsData | None]]],
    *,
    stop: asyncio.Event,
    interval: float = 0.1,
    clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
) -> int:
    """Sample until `stop` is set, then once more; returns how many samples were taken.

    Each round reads the fleet, takes the time, then verifies in a thread (RSA signatures
    would hold the event loop). The last sample is taken after `stop`, so the final state is
    always judged."""
    rounds = 0
    while True:
        last = stop.is_set()
        fleet = await read()
        now = clock()
        await asyncio.to_thread(probe.sample, fleet, now=now)
        rounds += 1
        if last:
            return rounds
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=interval)
