"""Names: declared hosts to SubjectAlternativeName entries, ``org`` and name to a subject.

`parse_hosts` decides, for each string of an IssuedCertificate's ``hosts``, which kind of SAN it is:

- an IP address (IPv4 or IPv6, no zone) -> ``IPAddress``;
- ``scheme://...`` -> ``UniformResourceIdentifier``. ``spiffe://`` URIs must be valid SPIFFE IDs
  (lowercase trust domain, no port/userinfo/query/fragment, no empty, ``.`` or ``..`` path
  segments, no percent-encoding); other URIs need an RFC 3986 scheme and printable ASCII without
  spaces. Requiring ``://`` makes ``host:port`` an error rather than a URI of scheme ``host``;
  URIs without an authority (``urn:...``) are therefore not accepted;
- everything else -> ``DNSName``, as an RFC 1123 host name (ASCII letters, digits and ``-``;
  labels of 1-63 characters, the last not all digits; at most 253 in total). Internationalised
  names must be A-labels.

The subject of an issued intermediate is ``O=<org>, OU=<IssuedCertificate name>`` and has no CN: the
OU makes each issued subject differ from its parent's (a CA whose subject equals its issuer's is
"self-issued" and path validation treats it differently), and no CN keeps it from being taken for a
host name.

Errors: `InvalidHost` (``EmptyHost``, ``MalformedHost``, ``DuplicateHost``), message naming the host
by index (``hosts[2]: empty``); `InvalidSubject` for an empty or over-long org/name. Strings are not
normalised (no lowercasing), so a SAN set compares equal to the declared hosts exactly.

Deliberately not here: wildcard DNS names (a CA's SAN names the CA, not what it may sign; that would
be name constraints), e-mail or directory-name SANs, IDNA conversion.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Iterable, Sequence
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.x509.oid import NameOID

from shared.pki.errors import InvalidHost, InvalidSubject

__all__ = [
    "describe_name",
    "diff_names",
    "parse_hosts",
    "quoted",
    "san_names",
    "subject_for",
    "subject_orgs",
]

# RFC 5280 Appendix A upper bounds: ub-organization-name and ub-organizational-unit-name.
_UB_ORGANIZATION = 64
_UB_ORGANIZATIONAL_UNIT = 64
_MAX_DNS_LENGTH = 253
_MAX_URI_LENGTH = 2048  # the SPIFFE ID spec's limit; generous for any other URI in a CA's SAN

_WHITESPACE = re.compile(r"\s")
_IP_CHARACTERS = re.compile(r"[0-9A-Fa-f.:]+(?:%.*)?")
_DNS_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
_URI_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*")
_SPIFFE_TRUST_DOMAIN = re.compile(r"[a-z0-9._-]+")
_SPIFFE_SEGMENT = re.compile(r"[A-Za-z0-9._-]+")
# Printable ASCII without space: what an IA5String URI in a certificate may reasonably hold.
_URI_CHARS = re.compile(r"[!-~]+")


def parse_hosts(hosts: Sequence[str]) -> list[x509.GeneralName]:
    """Turn declared hosts into SAN entries, in order; raise `InvalidHost` naming the first bad one.

    Two hosts giving the same SAN (``::1`` and ``0::1``) are a ``DuplicateHost`` error, so that the
    SAN *set* of a certificate equals the declared hosts one-to-one. Results for lists of strings
    are cached (the issuer parses the same declarations for every CSR and every signature).
    """
    if isinstance(hosts, str | bytes):
        # A lone string would be read as a list of one-character hosts.
        raise TypeError("hosts must be a sequence of strings, not a single string")
    if all(isinstance(host, str) for host in hosts):
        return list(_parse_hosts_cached(tuple(hosts)))
    return _parse_hosts(hosts)


@functools.lru_cache(maxsize=1024)
def _parse_hosts_cached(hosts: tuple[str, ...]) -> tuple[x509.GeneralName, ...]:
    return tuple(_parse_hosts(hosts))


def _parse_hosts(hosts: Sequence[str]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = []
    seen: dict[x509.GeneralName, int] = {}
    for index, host in enumerate(hosts):
        name = _parse_host(index, host)
        if name in seen:
            raise InvalidHost(
                "DuplicateHost",
                f"hosts[{index}]: {quoted(host)} is the same as hosts[{seen[name]}]",
            )
        seen[name] = index
        names.append(name)
    return names


def _parse_host(index: int, host: object) -> x509.GeneralName:
    where = f"hosts[{index}]"
    if not isinstance(host, str):
        raise InvalidHost("MalformedHost", f"{where}: expected a string, got {type(host).__name__}")
    if not host:
        raise InvalidHost("EmptyHost", f"{where}: empty")
    if _WHITESPACE.search(host):
        raise InvalidHost("MalformedHost", f"{where}: {quoted(host)} contains whitespace")
    if not host.isascii():
        raise InvalidHost(
            "MalformedHost", f"{where}: {quoted(host)} is not ASCII (give IDNs as xn-- A-labels)"
        )
    # Only hex digits, '.' and ':' (and an IPv6 zone after '%') can be an IP address; skip the
    # costly attempt (an exception per host) for everything else.
    try:
        address = ipaddress.ip_address(host) if _IP_CHARACTERS.fullmatch(host) else None
    except ValueError:
        address = None
    if address is not None:
        if isinstance(address, ipaddress.IPv6Address) and address.scope_id is not None:
            raise InvalidHost(
                "MalformedHost",
                f"{where}: {quoted(host)} has an IPv6 zone, which a SAN cannot hold",
            )
        return x509.IPAddress(address)
    if "://" in host:
        return x509.UniformResourceIdentifier(_check_uri(where, host))
    if ":" in host:
        raise InvalidHost(
            "MalformedHost",
            f"{where}: {quoted(host)} is neither an IP address, a URI (scheme://...) nor a DNS "
            "name; a SAN holds no port",
        )
    return x509.DNSName(_check_dns(where, host))


def quoted(text: str) -> str:
    """Text as messages quote it: repr, cut to 80 characters (inputs can be huge)."""
    return repr(text) if len(text) <= 80 else repr(text[:77] + "...")


def _check_dns(where: str, host: str) -> str:
    if len(host) > _MAX_DNS_LENGTH:
        raise InvalidHost(
            "MalformedHost", f"{where}: DNS name is {len(host)} characters, over {_MAX_DNS_LENGTH}"
        )
    labels = host.split(".")
    if labels[-1].isdigit():
        raise InvalidHost(
            "MalformedHost",
            f"{where}: {quoted(host)} is not a DNS name: its last label is all digits "
            "(RFC 1123 2.1); was an IP address meant?",
        )
    for label in labels:
        if not _DNS_LABEL.fullmatch(label):
            raise InvalidHost(
                "MalformedHost",
                f"{where}: {quoted(host)} is not a DNS name (label {quoted(label)}: use letters, "
                "digits and '-', 1-63 characters, not starting or ending with '-'; no wildcards)",
            )
    return host


def _check_uri(where: str, host: str) -> str:
    if len(host) > _MAX_URI_LENGTH:
        raise InvalidHost(
            "MalformedHost", f"{where}: URI is {len(host)} characters, over {_MAX_URI_LENGTH}"
        )
    scheme, _, rest = host.partition("://")
    if not _URI_SCHEME.fullmatch(scheme) or not rest or not _URI_CHARS.fullmatch(host):
        raise InvalidHost(
            "MalformedHost",
            f"{where}: {quoted(host)} is not a URI (scheme://rest, printable ASCII, no spaces)",
        )
    if scheme.lower() == "spiffe":
        _check_spiffe_id(where, host)
    else:
        try:
            urlsplit(host)
        except ValueError as exc:
            raise InvalidHost(
                "MalformedHost", f"{where}: {quoted(host)} is not a valid URI: {exc}"
            ) from None
    return host


def _check_spiffe_id(where: str, host: str) -> None:
    def bad(why: str) -> InvalidHost:
        return InvalidHost("MalformedHost", f"{where}: {quoted(host)} is not a SPIFFE ID: {why}")

    if not host.startswith("spiffe://"):
        raise bad("it must start with 'spiffe://' (lowercase)")
    authority, slash, path = host[len("spiffe://") :].partition("/")
    if not _SPIFFE_TRUST_DOMAIN.fullmatch(authority):
        raise bad("the trust domain must be non-empty lowercase letters, digits, '.', '-', '_'")
    if not slash:
        return
    for segment in path.split("/"):
        if not _SPIFFE_SEGMENT.fullmatch(segment) or segment in {".", ".."}:
            raise bad(
                "path segments must be non-empty letters, digits, '.', '-', '_' (not '.' or "
                "'..'), with no trailing '/', query or fragment"
            )


def describe_name(name: x509.GeneralName) -> str:
    """A SAN as an operator reads it: ``DNS:istiod.istio-system.svc``, ``URI:spiffe://...``.

    Values over 80 characters are cut (they may come from a CSR, which anyone can fill).
    """
    if isinstance(name, x509.DNSName):
        kind = "DNS"
    elif isinstance(name, x509.UniformResourceIdentifier):
        kind = "URI"
    elif isinstance(name, x509.IPAddress):
        kind = "IP"
    else:
        kind = type(name).__name__
    value = str(name.value)
    return f"{kind}:{value if len(value) <= 80 else value[:77] + '...'}"


def diff_names(
    *, declared: Iterable[x509.GeneralName], actual: Sequence[x509.GeneralName]
) -> str | None:
    """``None`` if ``actual`` holds exactly the ``declared`` names, once each; else what differs."""
    declared_set = set(declared)
    actual_set = set(actual)
    problems: list[str] = []
    if extra := actual_set - declared_set:
        problems.append("not declared: " + ", ".join(sorted(map(describe_name, extra))))
    if missing := declared_set - actual_set:
        problems.append("missing: " + ", ".join(sorted(map(describe_name, missing))))
    if not problems and len(actual) != len(actual_set):
        problems.append("some names appear more than once")
    return "; ".join(problems) or None


@functools.lru_cache(maxsize=1024)
def subject_for(*, org: str, name: str) -> x509.Name:
    """``O=<org>, OU=<name>``, no CN. Raises `InvalidSubject` if either is empty or too long.

    Cached: `x509.Name` is immutable, and the same declaration is signed again and again.
    """
    for field, value, bound in (
        ("org", org, _UB_ORGANIZATION),
        ("name", name, _UB_ORGANIZATIONAL_UNIT),
    ):
        if not value or value.strip() != value:
            raise InvalidSubject(
                "InvalidSubject",
                f"{field} {value!r}: must be non-empty, without surrounding spaces",
            )
        if len(value) > bound:
            raise InvalidSubject(
                "InvalidSubject",
                f"{field} is {len(value)} characters; an X.509 subject allows at most {bound} "
                "(RFC 5280 upper bounds)",
            )
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, org),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, name),
        ]
    )


def subject_orgs(subject: x509.Name) -> list[str]:
    """Every O value of a subject, in order (a well-formed one has exactly one)."""
    return [str(attr.value) for attr in subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)]


def san_names(extensions: x509.Extensions) -> list[x509.GeneralName]:
    """The SAN entries of a certificate's or CSR's extensions, in order; ``[]`` without a SAN."""
    try:
        extension = extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return []
    return list(extension.value)
