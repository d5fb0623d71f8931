"""Cross-signing a new root with the old one, and which roots a pinned trust then vouches for."""

from __future__ import annotations

import pytest
from cryptography import x509

from shared.pki import SigningRefused, cross_sign, load_signing_ca, vouched_roots
from shared.pki.authority import SigningCA
from shared.pki.chains import verify_path
from tests.pki.pki_testing import DAY, NOW, P256, Issuer, hierarchy, key, key_pem, make_ca, pem


def _root_ca(cn: str, seed: int, **options: object) -> tuple[Issuer, SigningCA]:
    root = make_ca(cn=cn, private_key=key(P256, seed), **options)  # type: ignore[arg-type]
    data = {
        "ca-cert.pem": pem(root.cert),
        "ca-key.pem": key_pem(root.key),
        "root-cert.pem": pem(root.cert),
    }
    return root, load_signing_ca(data, now=NOW)


def test_a_cross_signed_new_root_is_vouched_for_by_the_pinned_old_one() -> None:
    old, old_ca = _root_ca("old root", 200)
    new, new_ca = _root_ca("new root", 201)
    cross = cross_sign(new.cert, by=old_ca, now=NOW)
    assert cross.subject == new.cert.subject
    assert cross.issuer == old.cert.subject
    verify_path([cross, old.cert], now=NOW)
    vouched = vouched_roots([old.cert, new.cert], pinned=[old.cert], cross_signed=[cross], now=NOW)
    assert vouched.trusted == (old.cert, new.cert)
    assert vouched.untrusted == ()
    # What the new root signs verifies up to the old root through the cross certificate.
    below_new = make_ca(cn="below new", private_key=key(P256, 202), parent=new)
    verify_path([below_new.cert, cross, old.cert], now=NOW)
    del new_ca


def test_a_new_root_without_a_cross_certificate_is_not_vouched_for() -> None:
    old, _ = _root_ca("old root", 200)
    new, _ = _root_ca("new root", 201)
    vouched = vouched_roots([old.cert, new.cert], pinned=[old.cert], cross_signed=[], now=NOW)
    assert vouched.untrusted == (new.cert,)


def test_a_cross_certificate_from_an_unpinned_root_vouches_for_nothing() -> None:
    old, _ = _root_ca("old root", 200)
    new, _ = _root_ca("new root", 201)
    _, attacker_ca = _root_ca("old root", 203)  # same name as the pinned root, another key
    forged = cross_sign(new.cert, by=attacker_ca, now=NOW)
    vouched = vouched_roots([new.cert], pinned=[old.cert], cross_signed=[forged], now=NOW)
    assert vouched.untrusted == (new.cert,)


def test_a_cross_certificate_for_another_key_with_the_same_name_vouches_for_nothing() -> None:
    old, old_ca = _root_ca("old root", 200)
    new, _ = _root_ca("new root", 201)
    impostor, _ = _root_ca("new root", 204)
    cross = cross_sign(new.cert, by=old_ca, now=NOW)
    vouched = vouched_roots([impostor.cert], pinned=[old.cert], cross_signed=[cross], now=NOW)
    assert vouched.untrusted == (impostor.cert,)


def test_the_cross_certificate_lives_no_longer_than_either_root_and_then_vouches_no_more() -> None:
    old, old_ca = _root_ca("old root", 205, not_after=NOW + 10 * DAY)
    new, _ = _root_ca("new root", 201)
    cross = cross_sign(new.cert, by=old_ca, now=NOW)
    assert cross.not_valid_after_utc == old.cert.not_valid_after_utc
    later = NOW + 11 * DAY
    assert vouched_roots([new.cert], pinned=[old.cert], cross_signed=[cross], now=later).untrusted


def test_only_a_root_cross_signs() -> None:
    h = hierarchy(levels=2)
    intermediate_ca = load_signing_ca(h.secret_data("istio"), now=NOW)
    new, _ = _root_ca("new root", 201)
    with pytest.raises(SigningRefused) as refused:
        cross_sign(new.cert, by=intermediate_ca, now=NOW)
    assert "intermediate" in refused.value.message


def test_cross_signing_keeps_the_new_roots_key_identifier() -> None:
    _, old_ca = _root_ca("old root", 200)
    new, _ = _root_ca("new root", 201)
    cross = cross_sign(new.cert, by=old_ca, now=NOW)
    expected = x509.SubjectKeyIdentifier.from_public_key(new.cert.public_key())
    for extension in new.cert.extensions:
        if isinstance(extension.value, x509.SubjectKeyIdentifier):
            expected = extension.value
    assert cross.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value == expected
