"""URL rules shared by manifests and return-URL checks.

Manifests accept ``https`` URLs, and plain ``http`` only for loopback hosts
(127.0.0.0/8, ::1, localhost) so development and tests can run without TLS.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import unquote, urlsplit

__all__ = ["is_allowed_return_url", "is_loopback_host", "url_problem"]


def is_loopback_host(host: str | None) -> bool:
    if not host:
        return False
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


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
    if parts.username or parts.password:
        return f"{url!r} must not carry credentials"
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
