"""Declared hosts to SANs, and org/name to the subject."""

from __future__ import annotations

import ipaddress

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID
from hypothesis import given, settings
from pki.pki_testing import valid_hosts

from shared.pki import InvalidHost, InvalidSubject, parse_hosts
from shared.pki.names import describe_name, diff_names, subject_for

SPIFFE = "spiffe://cluster.local/ns/istio-system/sa/citadel"


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        pytest.param(SPIFFE, x509.UniformResourceIdentifier(SPIFFE), id="a spiffe id is a uri"),
        pytest.param(
            "https://ca.example.com/x",
            x509.UniformResourceIdentifier("https://ca.example.com/x"),
            id="any other scheme:// is a uri",
        ),
        pytest.param(
            "10.1.2.3", x509.IPAddress(ipaddress.ip_address("10.1.2.3")), id="ipv4 is an ip"
        ),
        pytest.param(
            "2001:db8::1", x509.IPAddress(ipaddress.ip_address("2001:db8::1")), id="ipv6 is an ip"
        ),
        pytest.param(
            "istiod.istio-system.svc", x509.DNSName("istiod.istio-system.svc"), id="a name is dns"
        ),
        pytest.param("localhost", x509.DNSName("localhost"), id="a single label is dns"),
        pytest.param("xn--bcher-kva.de", x509.DNSName("xn--bcher-kva.de"), id="an a-label is dns"),
    ],
)
def test_each_host_becomes_the_matching_kind_of_san(host: str, expected: x509.GeneralName) -> None:
    assert parse_hosts([host]) == [expected]


@pytest.mark.parametrize(
    ("hosts", "reason", "says"),
    [
        pytest.param([""], "EmptyHost", "hosts[0]: empty", id="an empty host is named by index"),
        pytest.param(
            ["a.example", "b.example", ""], "EmptyHost", "hosts[2]: empty", id="the index is exact"
        ),
        pytest.param([" a.example"], "MalformedHost", "hosts[0]", id="surrounding whitespace"),
        pytest.param(["a b.example"], "MalformedHost", "whitespace", id="inner whitespace"),
        pytest.param(["foo_bar.svc"], "MalformedHost", "not a DNS name", id="underscore in dns"),
        pytest.param(["-a.example"], "MalformedHost", "label '-a'", id="label starting with dash"),
        pytest.param(["a..example"], "MalformedHost", "label ''", id="empty label"),
        pytest.param(["a.example."], "MalformedHost", "label ''", id="trailing dot"),
        pytest.param(["*.example.com"], "MalformedHost", "no wildcards", id="wildcard refused"),
        pytest.param(["a" * 64 + ".example"], "MalformedHost", "1-63", id="label over 63"),
        pytest.param([("a" * 60 + ".") * 5 + "com"], "MalformedHost", "over 253", id="dns > 253"),
        pytest.param(["bücher.de"], "MalformedHost", "not ASCII", id="non-ascii name refused"),
        pytest.param(["istiod:15012"], "MalformedHost", "no port", id="host and port refused"),
        pytest.param(["fe80::1%eth0"], "MalformedHost", "zone", id="ipv6 zone refused"),
        pytest.param(["1.2.3.4.5"], "MalformedHost", "all digits", id="numbers are not dns"),
        pytest.param(["10.0.0.256"], "MalformedHost", "IP address meant", id="a bad ipv4"),
        pytest.param(["://x"], "MalformedHost", "not a URI", id="uri without scheme"),
        pytest.param(["https://"], "MalformedHost", "not a URI", id="uri with nothing after //"),
        pytest.param(["spiffe://Cluster.local/a"], "MalformedHost", "trust domain", id="upper td"),
        pytest.param(["spiffe:///ns/a"], "MalformedHost", "trust domain", id="empty td"),
        pytest.param(["spiffe://td:8080/a"], "MalformedHost", "trust domain", id="port in spiffe"),
        pytest.param(["spiffe://u@td/a"], "MalformedHost", "trust domain", id="userinfo"),
        pytest.param(["spiffe://td/ns//a"], "MalformedHost", "path segments", id="empty segment"),
        pytest.param(["spiffe://td/ns/"], "MalformedHost", "path segments", id="trailing slash"),
        pytest.param(["spiffe://td/ns/../a"], "MalformedHost", "path segments", id="dot-dot"),
        pytest.param(["spiffe://td/ns?x=1"], "MalformedHost", "path segments", id="query"),
        pytest.param(["spiffe://td/ns%41"], "MalformedHost", "path segments", id="percent-enc"),
        pytest.param(["SPIFFE://td/a"], "MalformedHost", "lowercase", id="uppercase scheme"),
        pytest.param(["https://x/" + "a" * 2048], "MalformedHost", "over 2048", id="uri > 2048"),
        pytest.param([42], "MalformedHost", "expected a string", id="a non-string"),
        pytest.param(
            ["::1", "0:0::1"], "DuplicateHost", "hosts[1]", id="the same ip twice is a duplicate"
        ),
        pytest.param(["a.example", "a.example"], "DuplicateHost", "hosts[0]", id="dns twice"),
    ],
)
def test_a_bad_host_is_a_clear_error_naming_it(hosts: list[str], reason: str, says: str) -> None:
    with pytest.raises(InvalidHost) as caught:
        parse_hosts(hosts)
    assert caught.value.reason == reason
    assert says in caught.value.message


def test_no_hosts_give_no_sans() -> None:
    assert parse_hosts([]) == []


@settings(max_examples=50, deadline=None)
@given(hosts=valid_hosts)
def test_valid_hosts_parse_one_san_each_in_order_and_describe_back(hosts: list[str]) -> None:
    names = parse_hosts(hosts)
    assert [describe_name(n).split(":", 1)[1] for n in names] == hosts
    assert diff_names(declared=names, actual=list(reversed(names))) is None


def test_name_difference_says_what_is_extra_and_what_is_missing() -> None:
    declared = parse_hosts(["a.example", SPIFFE])
    actual = parse_hosts(["a.example", "10.0.0.1"])
    assert diff_names(declared=declared, actual=actual) == (
        f"not declared: IP:10.0.0.1; missing: URI:{SPIFFE}"
    )
    assert diff_names(declared=declared, actual=[*declared, declared[0]]) == (
        "some names appear more than once"
    )


def test_subject_is_org_and_name_as_ou_without_cn() -> None:
    subject = subject_for(org="solo.io", name="east-cacerts")
    assert subject.rfc4514_string() == "OU=east-cacerts,O=solo.io"
    assert subject.get_attributes_for_oid(NameOID.COMMON_NAME) == []


@pytest.mark.parametrize(
    ("org", "name", "says"),
    [
        pytest.param("", "x", "org ''", id="empty org"),
        pytest.param("solo.io", "", "name ''", id="empty name"),
        pytest.param(" solo.io", "x", "surrounding spaces", id="org with spaces"),
        pytest.param("o" * 65, "x", "org is 65 characters", id="org over the rfc 5280 bound"),
        pytest.param("solo.io", "n" * 65, "name is 65 characters", id="name over the ou bound"),
    ],
)
def test_an_unusable_org_or_name_is_an_invalid_subject(org: str, name: str, says: str) -> None:
    with pytest.raises(InvalidSubject) as caught:
        subject_for(org=org, name=name)
    assert says in caught.value.message


def test_a_single_string_is_not_taken_for_a_list_of_hosts() -> None:
    with pytest.raises(TypeError, match="not a single string"):
        parse_hosts("istiod.istio-system.svc")


def test_a_huge_host_is_cut_short_in_the_message() -> None:
    with pytest.raises(InvalidHost) as caught:
        parse_hosts(["bad host " + "x" * 10_000])
    assert len(caught.value.message) < 200
