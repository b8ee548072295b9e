"""The OAuth client a connection uses, and the redirect URI its attempts name.

A connector's client credentials come from the environment its manifest names (or, for
a connection of a tenant, from that tenant's registration,
:mod:`broker.flows.tenant_credentials`); a connector whose credentials do not resolve is
not offered. What names the environment variable goes to the operator's log, never to a
page.
"""

from __future__ import annotations

import logging

from broker.core.connector import Connector
from broker.core.errors import ConfigurationError
from broker.core.manifest import resolve_secret
from broker.core.oauth import ClientCredentials
from broker.flows.tenant_credentials import tenant_client_credentials
from broker.runtime import Runtime

__all__ = [
    "client_credentials",
    "connection_credentials",
    "credentials_problem",
    "offered_connectors",
    "redirect_uri_for",
]

log = logging.getLogger("broker.connect")


def _resolve_credentials(connector: Connector) -> ClientCredentials:
    oauth = connector.manifest.oauth
    return ClientCredentials(
        client_id=resolve_secret(oauth.client_id, connector_id=connector.id, field="client_id"),
        client_secret=resolve_secret(
            oauth.client_secret, connector_id=connector.id, field="client_secret"
        ),
    )


def credentials_problem(connector: Connector) -> str | None:
    """For operators (log, CLI): why the connector's client credentials do not resolve."""
    try:
        _resolve_credentials(connector)
    except ConfigurationError as exc:
        return exc.message
    return None


def client_credentials(connector: Connector) -> ClientCredentials:
    """The connector's OAuth client credentials, from the environment.

    When they are not set, the operator's message (naming the environment variable)
    goes to the log; the error raised, which pages and the API show, names none."""
    try:
        return _resolve_credentials(connector)
    except ConfigurationError as exc:
        log.error("%s", exc.message)
        raise ConfigurationError(
            f"{connector.manifest.name} is not set up on this platform yet: its OAuth client "
            "credentials are missing. The operator can find the details in the broker's log.",
            details={"connector": connector.id},
        ) from None


def connection_credentials(
    rt: Runtime, connector: Connector, tenant: str | None
) -> ClientCredentials:
    """The OAuth client a connection of ``tenant`` uses: that tenant's registered
    credentials, or without a tenant the manifest's environment references."""
    if tenant is None:
        return client_credentials(connector)
    return tenant_client_credentials(rt, connector, tenant)


def offered_connectors(rt: Runtime) -> list[Connector]:
    """The connectors a user may pick: those whose client credentials are set."""
    return [c for c in rt.registry.all() if credentials_problem(c) is None]


def redirect_uri_for(rt: Runtime, connector: Connector) -> str:
    """The redirect URI a new attempt uses: the connector's own callback, unless its
    manifest (``[oauth] redirect = "shared"``) or ``BROKER_SHARED_CALLBACK_CONNECTORS``
    keeps it on the shared one registered before per-connector callbacks existed."""
    if (
        connector.manifest.oauth.redirect == "shared"
        or connector.id in rt.settings.shared_callback_ids
    ):
        return rt.settings.callback_url
    return rt.settings.connector_callback_url(connector.id)
