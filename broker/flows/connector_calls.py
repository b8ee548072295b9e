"""Calling a connector's code: the guarded transport its hooks get, and the
connection hooks (``check_connection`` after the code exchange, ``before_revoke``
before revocation), each with a time limit and a failure turned into a reason."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import httpx

from broker.core.connector import Connector
from broker.core.dispatch import guarded_client, run_hook
from broker.core.egress import EgressTransport, RetryPolicy, allowed_origins
from broker.runtime import Runtime

__all__ = ["call_connection_hook", "egress_transport", "user_agent"]


def _base_transport(rt: Runtime) -> Callable[[httpx.URL], httpx.BaseTransport]:
    # The transport the runtime's client would use for a URL (a test transport, or
    # the pooled default, or a proxy mount when BROKER_HTTP_TRUST_ENV is on). The
    # guarded transport calls it directly, so the runtime client's cookie jar and
    # default headers never mix into a connector's requests.
    return rt.http._transport_for_url


def egress_transport(
    rt: Runtime,
    connector: Connector,
    settings: Mapping[str, str],
    *,
    token: Callable[[], str] | None,
    refresh: Callable[[str], str] | None,
) -> EgressTransport:
    s = rt.settings
    return EgressTransport(
        _base_transport(rt),
        connector_id=connector.id,
        allowed=allowed_origins(connector.manifest, settings),
        token=token,
        refresh=refresh,
        retry_delay=connector.retry_delay,
        policy=RetryPolicy(
            max_attempts=s.delivery_max_attempts,
            backoff_base=s.delivery_backoff_base,
            backoff_max=s.delivery_backoff_max,
            retry_after_max=s.retry_after_max,
        ),
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
    authenticates with ``token``; returns ``None`` or why it failed."""
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
    except Exception as exc:
        message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
        return f"{type(exc).__name__}: {message}"[:500]
    finally:
        transport.stop("the hook is over")
        client.close()
    if transport.log.refused:
        return f"tried to reach {transport.log.refused[0]}, which the manifest does not declare"
    return None
