"""Calling a connector's code: the guarded transport its hooks get, and the
connection hooks (``check_connection`` after the code exchange, ``before_revoke``
before revocation), each with a time limit and a failure turned into a reason."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from urllib.parse import urlsplit
from weakref import WeakKeyDictionary

import httpcore
import httpx

from broker.core.addresses import PinnedTransport, checked_addresses
from broker.core.connector import Connector
from broker.core.dispatch import guarded_client, run_hook
from broker.core.egress import EgressTransport, RetryPolicy, allowed_origins
from broker.core.errors import BrokerError, EgressDenied, InvalidSetting
from broker.core.failures import FailureCode, logged_failure, setting_failure
from broker.core.placeholders import host_placeholders, render_url
from broker.runtime import Runtime

__all__ = [
    "call_connection_hook",
    "connection_host_problem",
    "egress_network",
    "egress_transport",
    "user_agent",
]

log = logging.getLogger("broker.connectors")

# One pinned, pooled transport per runtime (keyed by its client, which the runtime
# closes): connectors' connections are kept alive across deliveries.
_NETWORKS: WeakKeyDictionary[httpx.Client, PinnedTransport] = WeakKeyDictionary()
_NETWORKS_LOCK = threading.Lock()


def _uses_sockets(rt: Runtime) -> bool:
    """True when the runtime's client opens real sockets itself (its default transport
    is httpx's own), False for a test transport (respx, MockTransport, ASGI)."""
    return type(rt.http._transport) in (httpx.HTTPTransport, PinnedTransport)


def egress_network(rt: Runtime) -> PinnedTransport:
    """The transport under every connector request of ``rt`` that opens a socket:
    it resolves each host once, refuses non-public addresses (unless the host is
    itself loopback) and connects to the checked address. Tests replace its
    resolver: ``egress_network(rt).backend.resolver = fake``."""
    if isinstance(rt.http._transport, PinnedTransport):  # the runtime's own (the default)
        return rt.http._transport
    with _NETWORKS_LOCK:
        network = _NETWORKS.get(rt.http)
        if network is None:
            network = PinnedTransport(trust_env=rt.settings.http_trust_env)
            _NETWORKS[rt.http] = network
        return network


def _base_transport(rt: Runtime) -> Callable[[httpx.URL], httpx.BaseTransport]:
    # The transport the runtime's client would use for a URL (a test transport, or the
    # pooled default, or a proxy mount when BROKER_HTTP_TRUST_ENV is on). The guarded
    # transport calls it directly, so the runtime client's cookie jar and default
    # headers never mix into a connector's requests. Where that is httpx's own
    # direct transport, the pinned one (egress_network) takes its place. Through a
    # proxy the proxy connects, so the address rule is the proxy's to enforce.
    default = rt.http._transport

    def pick(url: httpx.URL) -> httpx.BaseTransport:
        transport = rt.http._transport_for_url(url)
        if transport is default and _uses_sockets(rt):
            return egress_network(rt)
        return transport

    return pick


def connection_host_problem(
    rt: Runtime, connector: Connector, settings: Mapping[str, str]
) -> str | None:
    """Why a connection's settings point a host of the manifest at an address the
    broker does not connect to (resolved now, as the egress guard would), or ``None``.
    Only hosts a setting fills are resolved; nothing is resolved under a test
    transport."""
    if not _uses_sockets(rt):
        return None
    values = {**settings, "client_id": "x"}  # {client_id} never stands in a host
    resolver = egress_network(rt).backend.resolver
    for template in connector.manifest.url_templates().values():
        if not host_placeholders(template):
            continue
        try:
            parts = urlsplit(render_url(template, values))
            host, port = parts.hostname, parts.port
        except InvalidSetting as exc:
            return setting_failure(log, exc, where=f"connector {connector.id!r}, {template!r}")
        if host is None:
            continue
        try:
            checked_addresses(host, port or 443, resolver=resolver)
        except EgressDenied as exc:
            return exc.message
        except httpcore.ConnectError:
            continue  # not resolvable now: a request there fails (and says so) later
    return None


def egress_transport(
    rt: Runtime,
    connector: Connector,
    settings: Mapping[str, str],
    *,
    token: Callable[[], str] | None,
    refresh: Callable[[str], str] | None,
    policy: RetryPolicy | None = None,
) -> EgressTransport:
    s = rt.settings
    policy = policy or RetryPolicy(
        max_attempts=s.delivery_max_attempts,
        backoff_base=s.delivery_backoff_base,
        backoff_max=s.delivery_backoff_max,
        retry_after_max=s.retry_after_max,
    )
    return EgressTransport(
        _base_transport(rt),
        connector_id=connector.id,
        allowed=allowed_origins(connector.manifest, settings),
        token=token,
        refresh=refresh,
        retry_delay=connector.retry_delay,
        policy=policy,
        clock=rt.clock,
        sleep=rt.sleep,
    )


def user_agent(rt: Runtime) -> str:
    return f"scoped-broker (+{rt.settings.resolved_base_url})"


def call_connection_hook(
    rt: Runtime,
    connector: Connector,
    hook: str,
    settings: Mapping[str, str],
    *,
    token: str,
) -> str | None:
    """Run ``check_connection`` or ``before_revoke`` with a guarded client that
    authenticates with ``token``; returns ``None`` or why it failed: an error of the
    broker's tree as ``Type: message``, anything else as ``connector_error (Type)``
    (its text goes to the operator log only)."""
    fn = getattr(connector, hook)
    if getattr(type(connector), hook) is getattr(Connector, hook):
        return None  # not overridden: nothing to run
    transport = egress_transport(rt, connector, settings, token=lambda: token, refresh=None)
    client = guarded_client(transport, user_agent=user_agent(rt), timeout=rt.settings.http_timeout)
    try:
        run_hook(
            lambda: fn(client, dict(settings)),
            time_limit=rt.settings.connector_timeout,
            name=f"{connector.id}.{hook}",
        )
    except BrokerError as exc:
        return f"{type(exc).__name__}: {exc.message}"[:500]
    except Exception as exc:
        where = f"connector {connector.id!r} raised in {hook}"
        return logged_failure(log, FailureCode.CONNECTOR_ERROR, exc, where=where)
    finally:
        transport.stop("the hook is over")
        client.close()
    if transport.log.refused:
        refusals = [a["error"] for a in transport.log.attempts if "refused" in a.get("error", "")]
        why = refusals[0].removeprefix("refused before connecting: ") if refusals else ""
        return f"tried to reach {transport.log.refused[0]}; refused: {why}"
    return None
