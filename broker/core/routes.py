"""The public paths that leave the web layer: links the broker hands out (connect links,
user links) and the OAuth redirect URIs registered at providers. The web routers are
declared with these, and flows and settings build URLs from them, so a path is spelled
once; ``tests/integration/test_routes.py`` holds the routers to the table."""

from __future__ import annotations

__all__ = ["CONNECT", "CONNECT_TO", "ME", "OAUTH_CALLBACK", "OAUTH_CALLBACK_FOR"]

CONNECT = "/connect"  # the connect link without a connector: the user chooses
CONNECT_TO = "/connect/{connector_id}"  # a connect link for one connector
ME = "/me"  # the user's page (user links)
OAUTH_CALLBACK = "/oauth/callback"  # the shared redirect URI (older registrations)
OAUTH_CALLBACK_FOR = "/oauth/callback/{connector_id}"  # one redirect URI per connector
