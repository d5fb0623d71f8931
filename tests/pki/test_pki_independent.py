"""Independent verification of what we produce: `openssl verify` and `pkilint`, not our own code.

The test clock is fixed (`NOW`), so ``openssl verify`` is given ``-attime NOW``; otherwise the
command is exactly the one Istio operators run. ``pkilint`` (RFC 5280 profile) must report no
ERROR, with one documented exception: pkilint 0.13 checks URI SANs with ``validators.url``, which
knows only web schemes (http, https, ftp, ...), so it reports every ``spiffe://`` SAN as
``pkix.invalid_uri_syntax`` although RFC 3986 and the SPIFFE ID spec allow it. That finding, and
only for ``spiffe://`` values, is tolerated; the strict test without SPIFFE IDs shows zero errors.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from pki.pki_testing import (
    ALL_SPECS,
    NOW,
    P256,
    P384,
    RSA2048,
    Issued,
    issue,
    key,
    make_ca,
    pem,
    spec_id,
)

from shared.pki import Bundle

LINT = Path(sys.executable).parent / "lint_pkix_cert"
OPENSSL = shutil.which("openssl")
FINDING = re.compile(r"^\s+(?P<code>\S+) \((?P<severity>[A-Z]+)\):?\s?(?P<detail>.*)$")
SPIFFE_FALSE_POSITIVE = re.compile(r'^Invalid URI syntax: "spiffe://[^"]*"$')

CASES = [
    pytest.param(
        {"spec": spec, "form": form, "levels": levels}, id=f"{spec_id(spec)}-{form}-{levels}"
    )
    for spec in ALL_SPECS
    for form in ("istio", "tls")
    for levels in (1, 2)
] + [
    pytest.param({"spec": RSA2048, "signer_spec": RSA2048}, id="RSA-2048-signer"),
    pytest.param({"spec": P384, "signer_spec": P384}, id="P-384-signer"),
]


def write(bundle: Bundle, directory: Path) -> None:
    """The public files only: the key is never written, not even to tmp_path."""
    for name, data in bundle.to_secret_data().items():
        if name != "ca-key.pem":
            (directory / name).write_bytes(data)


def openssl_verify(directory: Path) -> subprocess.CompletedProcess[str]:
    assert OPENSSL is not None, "openssl must be installed for these tests"
    return subprocess.run(
        [
            OPENSSL,
            "verify",
            "-attime",
            str(int(NOW.timestamp())),
            "-CAfile",
            str(directory / "root-cert.pem"),
            "-untrusted",
            str(directory / "cert-chain.pem"),
            str(directory / "ca-cert.pem"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def pkilint_errors(certificate: Path) -> list[tuple[str, str]]:
    """(code, detail) of every ERROR-or-worse finding ``lint_pkix_cert lint -s ERROR`` reports."""
    result = subprocess.run(
        [str(LINT), "lint", "-s", "ERROR", str(certificate)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    findings = [
        (match["code"], match["detail"])
        for line in result.stdout.splitlines()
        if (match := FINDING.match(line))
    ]
    # A non-zero exit must be explained by findings, or pkilint itself failed.
    assert result.returncode == 0 or findings, result.stdout + result.stderr
    return findings


def not_tolerated(findings: list[tuple[str, str]]) -> list[tuple[str, str]]:
    return [
        (code, detail)
        for code, detail in findings
        if not (code == "pkix.invalid_uri_syntax" and SPIFFE_FALSE_POSITIVE.match(detail))
    ]


@pytest.mark.parametrize("options", CASES)
def test_openssl_verifies_and_pkilint_finds_no_error_in_every_produced_bundle(
    options: dict[str, object], tmp_path: Path
) -> None:
    result: Issued = issue(**options)
    write(result.bundle, tmp_path)
    verified = openssl_verify(tmp_path)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert verified.stdout.strip() == f"{tmp_path / 'ca-cert.pem'}: OK"
    assert not_tolerated(pkilint_errors(tmp_path / "ca-cert.pem")) == []


def test_pkilint_finds_no_error_at_all_without_spiffe_ids(tmp_path: Path) -> None:
    hosts = (
        "istiod.istio-system.svc",
        "https://ca.mesh.example.com/east",
        "10.0.0.7",
        "2001:db8::7",
    )
    result = issue(hosts=hosts)
    write(result.bundle, tmp_path)
    assert pkilint_errors(tmp_path / "ca-cert.pem") == []
    assert openssl_verify(tmp_path).returncode == 0


def test_the_tolerated_pkilint_finding_is_only_the_spiffe_uri(tmp_path: Path) -> None:
    result = issue()
    write(result.bundle, tmp_path)
    findings = pkilint_errors(tmp_path / "ca-cert.pem")
    assert {code for code, _ in findings} <= {"pkix.invalid_uri_syntax"}
    assert all(SPIFFE_FALSE_POSITIVE.match(detail) for _, detail in findings)


def test_openssl_rejects_a_bundle_with_a_foreign_root_so_the_check_can_fail(
    tmp_path: Path,
) -> None:
    bundle = issue().bundle
    stranger = make_ca(cn="stranger", private_key=key(P256, 9))
    write(
        Bundle(
            ca_cert_pem=bundle.ca_cert_pem,
            ca_key_pem=b"",
            cert_chain_pem=bundle.cert_chain_pem,
            root_cert_pem=pem(stranger.cert),
        ),
        tmp_path,
    )
    assert openssl_verify(tmp_path).returncode != 0
