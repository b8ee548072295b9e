"""Which network addresses a connector may reach, checked where the socket opens.

A manifest names its hosts, and a host placeholder can only fill the first label
of a domain the manifest names (:mod:`broker.core.placeholders`). Where that
name *resolves* is another matter: a third party's wildcard DNS, a stale record
or a rebinding attacker can point it at the broker's own network. So every
connection a connector's request opens goes through :class:`PinnedBackend`:

1. the host is resolved once, with an injectable :data:`Resolver`;
2. every address of the answer is checked (:func:`address_problem`): private,
   loopback, link-local, shared (CGNAT, 100.64/10), multicast, unspecified,
   reserved and cloud metadata addresses are refused, also when embedded in an
   IPv6 address (``::ffff:10.0.0.1``, 6to4, NAT64); one bad address refuses the
   whole answer;
3. the socket is connected to a checked address, never to the name, so a
   second resolution (a DNS rebind between check and connect) cannot happen.
   TLS still verifies the certificate against the name (httpcore passes the
   URL's host as ``server_hostname``).

Loopback is allowed only when the host itself is loopback: ``localhost``, a name
under it (RFC 6761: pinned to 127.0.0.1 without asking DNS, as browsers do) or
a loopback IP literal; such a host can only come from the manifest, never from a
setting. That is how tests and the built-in sandbox run.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import httpcore
import httpx

from broker.core.errors import EgressDenied, InvariantBroken
from broker.core.urls import is_loopback_host

__all__ = [
    "PinnedBackend",
    "PinnedTransport",
    "Resolver",
    "address_problem",
    "checked_addresses",
    "system_resolver",
]

log = logging.getLogger("broker.egress")

Resolver = Callable[[str, int], Sequence[str]]
"""``(host, port) -> addresses`` (IP strings); raises ``OSError`` when the name
does not resolve."""

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_SHARED = ipaddress.ip_network("100.64.0.0/10")  # RFC 6598 (CGNAT); not "private" to Python
_NAT64 = ipaddress.ip_network("64:ff9b::/96")  # RFC 6052: the IPv4 address is the low 32 bits
_METADATA = frozenset(
    ipaddress.ip_address(a)
    for a in (
        "169.254.169.254",  # AWS, GCP, Azure, OpenStack, …
        "169.254.170.2",  # AWS ECS task metadata
        "fd00:ec2::254",  # AWS IMDS over IPv6
        "100.100.100.200",  # Alibaba Cloud
        "168.63.129.16",  # Azure wire server (a public address)
    )
)
_LOOPBACK_PIN = ("127.0.0.1",)
_LIMITS = httpx.Limits(max_connections=100, max_keepalive_connections=20)


def system_resolver(host: str, port: int) -> list[str]:
    """The operating system's answer for ``host``, addresses in its order, once each."""
    out: list[str] = []
    for *_, sockaddr in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM):
        address = str(sockaddr[0])
        if address not in out:
            out.append(address)
    return out


def _embedded_v4(addr: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    if addr.sixtofour is not None:
        return addr.sixtofour
    if addr.teredo is not None:
        return addr.teredo[1]
    if addr in _NAT64:
        return ipaddress.IPv4Address(int(addr) & 0xFFFFFFFF)
    return None


def address_problem(address: str | IPAddress) -> str | None:
    """Why a connector may not connect to ``address``, or ``None`` for a public one."""
    try:
        addr = ipaddress.ip_address(address)
    except ValueError:
        return "not an IP address"
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.scope_id:
            return "a scoped (link-local) address"
        inner = _embedded_v4(addr)
        if inner is not None and (problem := address_problem(inner)):
            return problem
    if addr in _METADATA:
        return "a cloud metadata address"
    checks = (
        (addr.is_unspecified, "the unspecified address"),
        (addr.is_loopback, "a loopback address"),
        (addr.is_link_local, "a link-local address"),
        (addr.is_multicast, "a multicast address"),
        (isinstance(addr, ipaddress.IPv4Address) and addr in _SHARED, "a shared (CGNAT) address"),
        (addr.is_reserved, "a reserved address"),
        (addr.is_private, "a private address"),
        (not addr.is_global, "not a public address"),
    )
    return next((why for bad, why in checks if bad), None)


def _literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def checked_addresses(host: str, port: int, *, resolver: Resolver) -> list[str]:
    """The addresses a connection to ``host`` may use: resolved once, every one checked.

    Raises :class:`EgressDenied` when any address of the answer is not public (and
    ``host`` is not itself loopback), and :class:`httpcore.ConnectError` when the name
    does not resolve (retried like any connection that could not be opened)."""
    literal = _literal(host)
    if is_loopback_host(host):
        return [str(literal)] if literal is not None else list(_LOOPBACK_PIN)
    if literal is not None:
        addresses = [str(literal)]
    else:
        try:
            addresses = [str(a) for a in resolver(host, port)]
        except (OSError, UnicodeError) as exc:
            raise httpcore.ConnectError(f"{host} does not resolve ({exc})") from None
        if not addresses:
            raise httpcore.ConnectError(f"{host} does not resolve")
    for address in addresses:
        if problem := address_problem(address):
            log.warning("refused to connect to %s: it resolves to %s (%s)", host, address, problem)
            raise EgressDenied(
                f"{host} resolves to {problem}; the broker does not connect there",
                details={"destination": host, "address": address},
            )
    return addresses


class PinnedBackend(httpcore.NetworkBackend):
    """An httpcore network backend that connects only to checked addresses."""

    def __init__(
        self,
        *,
        resolver: Resolver = system_resolver,
        inner: httpcore.NetworkBackend | None = None,
    ) -> None:
        self.resolver = resolver
        self._inner = inner or httpcore.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        last: Exception | None = None
        for address in checked_addresses(host, port, resolver=self.resolver):
            try:
                return self._inner.connect_tcp(
                    address,
                    port,
                    timeout=timeout,
                    local_address=local_address,
                    socket_options=socket_options,
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last = exc  # try the next checked address
        if last is None:  # checked_addresses refuses rather than answer no address
            raise InvariantBroken("a host was checked and yielded no address to connect to")
        raise last

    def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        raise EgressDenied("connectors may not use Unix sockets")

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


class PinnedTransport(httpx.HTTPTransport):
    """``httpx.HTTPTransport`` (HTTP/1.1, pooled, TLS verified against the host name)
    whose connections go through :class:`PinnedBackend`."""

    def __init__(
        self,
        *,
        resolver: Resolver = system_resolver,
        network_backend: httpcore.NetworkBackend | None = None,
        verify: bool = True,
        trust_env: bool = True,
        limits: httpx.Limits = _LIMITS,
    ) -> None:
        super().__init__(verify=verify, trust_env=trust_env, limits=limits)
        self.backend = PinnedBackend(resolver=resolver, inner=network_backend)
        self._pool = httpcore.ConnectionPool(
            ssl_context=httpx.create_ssl_context(verify=verify, trust_env=trust_env),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=self.backend,
        )
