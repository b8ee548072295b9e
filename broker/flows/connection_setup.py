"""Connection settings and the post-connect check, for the connect flow.

Settings (``[[settings]]`` in the manifest, e.g. a Zendesk subdomain) are given
when the host creates the connect session, validated against the manifest,
carried inside the session token to the approval (no table holds them before
there is a connection), validated again, and stored on the connection.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping

from broker.core.connector import Connector
from broker.core.errors import InvalidInput, SessionInvalid
from broker.core.manifest import OAuthSettings
from broker.core.oauth import ClientCredentials, TokenSet
from broker.core.revocation import revoke_grant
from broker.flows.connector_calls import call_connection_hook, connection_host_problem
from broker.runtime import Runtime

__all__ = ["check_new_connection", "encode_settings", "provider_oauth", "settings_in_token"]


# The settings part of a session token, encoded: far above 20 settings of sensible
# length, far below what could make decoding it costly.
MAX_ENCODED_SETTINGS = 4096


def encode_settings(values: Mapping[str, str]) -> str:
    raw = json.dumps(dict(values), separators=(",", ":"), sort_keys=True).encode()
    encoded = base64.urlsafe_b64encode(raw).decode().rstrip("=")
    if len(encoded) > MAX_ENCODED_SETTINGS:
        raise InvalidInput(
            f"settings are too long (at most {MAX_ENCODED_SETTINGS * 3 // 4} bytes as JSON)",
            details={"field": "settings"},
        )
    return encoded


def settings_in_token(token: str | None) -> dict[str, str] | None:
    """The connection settings a session token carries (after its last ``.``).

    Settings travel inside the token: the stored digest covers the whole token, so
    a changed setting is an unknown session. They are not secret (a subdomain, a
    repository), so carrying them in the link is harmless.

    This runs before the session is looked up, on whatever the request carries: a
    settings part the broker cannot have written (too long, not base64 JSON, nested,
    not an object of strings) is ``SessionInvalid`` at once, and is never parsed deep."""
    if not token or "." not in token:
        return None
    encoded = token.rsplit(".", 1)[1]
    if len(encoded) > MAX_ENCODED_SETTINGS:
        raise SessionInvalid("this session link is not valid")
    try:
        values = json.loads(base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)))
    except (binascii.Error, ValueError, RecursionError):
        raise SessionInvalid("this session link is not valid") from None
    if not isinstance(values, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in values.items()
    ):
        raise SessionInvalid("this session link is not valid")
    return values


def provider_oauth(
    connector: Connector, settings: Mapping[str, str] | None, creds: ClientCredentials
) -> OAuthSettings:
    """The connector's ``[oauth]`` with placeholders filled for this connection."""
    return connector.oauth_settings({**(settings or {}), "client_id": creds.client_id})


def check_new_connection(
    rt: Runtime,
    connector: Connector,
    settings: Mapping[str, str],
    tokens: TokenSet,
    oauth: OAuthSettings,
    creds: ClientCredentials,
) -> str | None:
    """Check where the connection's hosts resolve, then run the connector's
    post-connect check; on failure, revoke the new tokens."""
    refused = connection_host_problem(rt, connector, settings) or call_connection_hook(
        rt, connector, "check_connection", settings, token=tokens.access_token
    )
    if refused is not None:
        revoke_grant(
            rt.http,
            oauth,
            creds,
            access_token=tokens.access_token,
            refresh_token=tokens.refresh_token,
        )
    return refused
