"""The agent's bundle check runs once per bundle content, and still sees expiry and tampering."""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography import x509

import services.agent.bundles as bundles
from services.agent.bundles import BundleChecks
from shared.pki import (
    Bundle,
    BundleInvalid,
    KeyAlgorithm,
    KeySpec,
    build_csr,
    check_bundle,
    create_root_ca,
    generate_private_key,
    load_signing_ca,
    make_bundle,
    private_key_to_pem,
    sign_intermediate,
)

NOW = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.UTC)
HOSTS = ["spiffe://cluster.local/ns/istio-system/sa/citadel"]
P256 = KeySpec(algorithm=KeyAlgorithm.ECDSA, size=256)


@pytest.fixture
def bundle() -> Bundle:
    data = create_root_ca(
        org="o", common_name="root", ttl=dt.timedelta(days=30), now=NOW, spec=P256
    )
    ca = load_signing_ca(data, now=NOW)
    key = generate_private_key(P256)
    csr = x509.load_pem_x509_csr(build_csr(key, org="solo.io", name="ca", hosts=HOSTS))
    issued = sign_intermediate(
        csr, ca, hosts=HOSTS, org="solo.io", name="ca", ttl=dt.timedelta(days=1), now=NOW
    )
    return make_bundle(issued, private_key_to_pem(key))


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[Bundle]:
    """A spy on the real check_bundle: it still runs, and each run is counted."""
    seen: list[Bundle] = []

    def spy(bundle: Bundle, **kwargs: object) -> object:
        seen.append(bundle)
        return check_bundle(bundle, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(bundles, "check_bundle", spy)
    return seen


async def test_the_same_bundle_is_checked_once(bundle: Bundle, calls: list[Bundle]) -> None:
    checks = BundleChecks()
    first = await checks.check(bundle, hosts=HOSTS, org="solo.io", now=NOW)
    again = await checks.check(bundle, hosts=HOSTS, org="solo.io", now=NOW + dt.timedelta(hours=1))
    assert again == first
    assert len(calls) == 1


async def test_a_cached_bundle_is_checked_again_once_expired(
    bundle: Bundle, calls: list[Bundle]
) -> None:
    checks = BundleChecks()
    await checks.check(bundle, hosts=HOSTS, org="solo.io", now=NOW)
    with pytest.raises(BundleInvalid):
        await checks.check(bundle, hosts=HOSTS, org="solo.io", now=NOW + dt.timedelta(days=2))
    assert len(calls) == 2


async def test_other_bytes_or_other_declared_hosts_are_checked_anew(
    bundle: Bundle, calls: list[Bundle]
) -> None:
    checks = BundleChecks()
    await checks.check(bundle, hosts=HOSTS, org="solo.io", now=NOW)
    other_key = private_key_to_pem(generate_private_key(P256))
    tampered = Bundle(
        ca_cert_pem=bundle.ca_cert_pem,
        ca_key_pem=other_key,
        cert_chain_pem=bundle.cert_chain_pem,
        root_cert_pem=bundle.root_cert_pem,
    )
    with pytest.raises(BundleInvalid):
        await checks.check(tampered, hosts=HOSTS, org="solo.io", now=NOW)
    with pytest.raises(BundleInvalid):
        await checks.check(
            bundle, hosts=[*HOSTS, "istiod.istio-system.svc"], org="solo.io", now=NOW
        )
    assert len(calls) == 3
