"""URL rules shared by manifests, the egress guard, page headers and return-URL checks.

Manifests accept ``https`` URLs, and plain ``http`` only for loopback hosts
(127.0.0.0/8, ::1, ``localhost`` and names under it, RFC 6761) so development
and tests can run without TLS. A URL's host must be a DNS name (labels of
``[A-Za-z0-9-]``) or an IP literal (IPv6 in brackets): nothing else can reach a
page header or a socket. :func:`origin` rebuilds ``scheme://host[:port]`` from
the parsed parts, never from the raw string.
"""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import unquote, urlsplit

__all__ = ["host_problem", "is_allowed_return_url", "is_loopback_host", "origin", "url_problem"]

_DEFAULT_PORTS = {"https": 443, "http": 80}
# The authority of an acceptable URL: a name or a bracketed IPv6 literal, then a port.
_AUTHORITY = re.compile(
    r"^(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<name>[A-Za-z0-9.-]+))(?::(?P<port>[0-9]{1,5}))?$"
)
_DNS_LABEL = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
# What WHATWG URL parsing reads as an IPv4 number (2852039166, 0x7f000001, 0177):
# a last label like this makes the whole host an IPv4 address to a browser.
_NUMBER = re.compile(r"^(?:0x[0-9a-f]*|[0-9]+)$")
_BAD_CHARACTER = re.compile(r"[\x00-\x20\x7f\"<>\\^`]")


def is_loopback_host(host: str | None) -> bool:
    if not host:
        return False
    name = host.lower().rstrip(".")
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def host_problem(host: str) -> str | None:
    """Why ``host`` (as written in a URL: IPv6 in brackets, no port) is neither a DNS
    name nor an IP literal, or ``None``."""
    bad = f"the host {host!r} is not a valid host name or IP address"
    if host.startswith("[") and host.endswith("]"):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            return bad
        return None
    name = host.lower()
    labels = name.split(".")
    if len(name) > 253 or not all(_DNS_LABEL.fullmatch(label) for label in labels):
        return bad
    if _NUMBER.fullmatch(labels[-1]):
        try:
            ipaddress.IPv4Address(name)  # only the dotted quad, no leading zeros
        except ValueError:
            return bad
    return None


def _authority_problem(netloc: str) -> str | None:
    match = _AUTHORITY.fullmatch(netloc)
    if match is None:
        return f"the host {netloc!r} is not a valid host name or IP address"
    host = f"[{match['v6']}]" if match["v6"] is not None else match["name"]
    if problem := host_problem(host):
        return problem
    if match["port"] is not None and not 0 < int(match["port"]) < 65536:
        return f"the port {match['port']} is not valid"
    return None


def origin(url: str) -> str | None:
    """``scheme://host[:port]`` of an acceptable http(s) URL, rebuilt from its parsed
    parts (host lower-cased, IPv6 bracketed, default port left out); ``None`` when the
    URL is not acceptable (see :func:`url_problem`)."""
    if url_problem(url) is not None:
        return None
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{ipaddress.IPv6Address(host).compressed}]"
    port = parts.port
    suffix = f":{port}" if port is not None and port != _DEFAULT_PORTS[scheme] else ""
    return f"{scheme}://{host}{suffix}"


def url_problem(url: str) -> str | None:
    """Why ``url`` is not acceptable in a manifest, or ``None`` when it is."""
    try:
        parts = urlsplit(url)
        host = parts.hostname
        parts.port  # noqa: B018  (raises on a bad port)
    except ValueError:
        return f"{url!r} is not a valid URL"
    if parts.scheme not in ("http", "https") or not host:
        return f"{url!r} is not an absolute http(s) URL"
    if parts.username or parts.password or "@" in parts.netloc:
        return f"{url!r} must not carry credentials"
    if problem := _authority_problem(parts.netloc):
        return f"{url!r}: {problem}"
    if _BAD_CHARACTER.search(url):
        return f"{url!r} contains spaces, quotes, backslashes or control characters"
    if parts.scheme == "http" and not is_loopback_host(host):
        return f"{url!r} uses http; only https is allowed except for loopback hosts"
    return None


def is_allowed_return_url(url: str, prefixes: list[str]) -> bool:
    """True when ``url`` has the scheme, host and port of an allow-list entry and
    its path lies at or under the entry's path (segment-wise, so
    ``https://app.example`` never admits ``https://app.example.evil``)."""
    try:
        target = urlsplit(url)
        target_port = target.port
    except ValueError:
        return False
    if target.scheme not in ("http", "https") or not target.hostname:
        return False
    if target.username or target.password:
        return False
    # A browser resolves "." and ".." (also percent-encoded) before following the URL,
    # so "/integrations/../admin" would leave the allowed path: refuse them outright.
    if any(seg in (".", "..") for seg in unquote(target.path).replace("\\", "/").split("/")):
        return False
    for prefix in prefixes:
        try:
            allowed = urlsplit(prefix)
            allowed_port = allowed.port
        except ValueError:
            continue
        if (target.scheme, target.hostname, target_port) != (
            allowed.scheme,
            allowed.hostname,
            allowed_port,
        ):
            continue
        base = allowed.path.rstrip("/")
        if target.path == base or target.path.startswith(base + "/") or base == "":
            return True
    return False
