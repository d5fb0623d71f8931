"""A self-signed root made by create_root_ca is a signing CA that our loader and openssl accept."""

from __future__ import annotations

import datetime as dt
import shutil
import subprocess
from pathlib import Path

import pytest
from cryptography import x509

from shared.pki import (
    KeyAlgorithm,
    KeySpec,
    build_csr,
    create_root_ca,
    generate_private_key,
    load_signing_ca,
    make_bundle,
    private_key_to_pem,
    sign_intermediate,
)

NOW = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.UTC)
HOSTS = ["spiffe://cluster.local/ns/istio-system/sa/citadel"]


@pytest.mark.parametrize(
    "spec",
    [
        KeySpec(algorithm=KeyAlgorithm.ECDSA, size=256),
        KeySpec(algorithm=KeyAlgorithm.RSA, size=2048),
    ],
    ids=["P-256 root", "RSA-2048 root"],
)
def test_a_new_root_signs_intermediates_that_openssl_verifies(
    spec: KeySpec, tmp_path: Path
) -> None:
    data = create_root_ca(
        org="meshtrust demo", common_name="root", ttl=dt.timedelta(days=3650), now=NOW, spec=spec
    )
    ca = load_signing_ca(data, now=NOW)
    root = x509.load_pem_x509_certificate(data["root-cert.pem"])
    assert root.subject == root.issuer
    assert root.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    agent_key = generate_private_key(KeySpec(algorithm=KeyAlgorithm.ECDSA, size=256))
    csr = x509.load_pem_x509_csr(build_csr(agent_key, org="solo.io", name="east", hosts=HOSTS))
    issued = sign_intermediate(
        csr, ca, hosts=HOSTS, org="solo.io", name="east", ttl=dt.timedelta(days=30), now=NOW
    )
    bundle = make_bundle(issued, private_key_to_pem(agent_key))
    for name, content in bundle.to_secret_data().items():
        if name != "ca-key.pem":
            (tmp_path / name).write_bytes(content)
    openssl = shutil.which("openssl")
    assert openssl is not None
    result = subprocess.run(
        [
            openssl, "verify", "-attime", str(int(NOW.timestamp())),
            "-CAfile", str(tmp_path / "root-cert.pem"),
            "-untrusted", str(tmp_path / "cert-chain.pem"),
            str(tmp_path / "ca-cert.pem"),
        ],
        capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr


def test_a_root_needs_an_aware_clock_and_a_positive_lifetime() -> None:
    with pytest.raises(ValueError, match="timezone"):
        create_root_ca(
            org="o", common_name="r", ttl=dt.timedelta(days=1), now=NOW.replace(tzinfo=None)
        )
    with pytest.raises(ValueError, match="positive"):
        create_root_ca(org="o", common_name="r", ttl=dt.timedelta(0), now=NOW)
