"""Revoking a connection's tokens at the provider, in the provider's own way.

``oauth.revocation`` in the manifest says which way (``oauth.revoke_url`` is
where; its placeholders are already filled in when it gets here):

``rfc7009`` (default)
    RFC 7009: the refresh token, then the access token, each posted as a form
    (``token``, ``token_type_hint``) with the client's authentication. Google.
``bearer``
    one request (``oauth.revoke_method``) authenticated with the access token
    itself; revokes that token. Slack's ``auth.revoke``, Zendesk's
    ``DELETE /api/v2/oauth/tokens/current.json``.
``client_json``
    one request (``oauth.revoke_method``) with HTTP Basic client authentication
    and the JSON body ``{"access_token": …}``. GitHub's
    ``DELETE /applications/{client_id}/token``.

A token the provider already considers invalid (``invalid_token``, a 401 to a
bearer call, Slack's ``invalid_auth``/``token_revoked``) counts as revoked:
the point, a token nobody can use, is reached. Results name each token and
never contain one.
"""

from __future__ import annotations

import httpx

from broker.core.connector import provider_message
from broker.core.errors import BrokerError
from broker.core.manifest import OAuthSettings
from broker.core.oauth import ClientCredentials, revoke_token
from broker.core.statuses import TokenRevocation

__all__ = ["revoke_grant"]

_INVALID_TOKEN_ERRORS = frozenset({"invalid_token", "invalid_auth", "token_revoked"})


def _send(http: httpx.Client, method: str, url: str, **kwargs: object) -> httpx.Response | str:
    try:
        return http.request(method, url, **kwargs)  # type: ignore[arg-type]
    except httpx.TimeoutException:
        return TokenRevocation.FAILED.because("the provider's revocation endpoint timed out")
    except httpx.HTTPError as exc:
        name = type(exc).__name__
        return TokenRevocation.FAILED.because(
            f"the provider's revocation endpoint could not be reached ({name})"
        )


def _json_error(resp: httpx.Response) -> str | None:
    try:
        body = resp.json()
    except ValueError:
        return None
    if isinstance(body, dict) and body.get("ok") is False:
        return str(body.get("error") or "ok=false")[:100]
    return None


def _bearer(http: httpx.Client, oauth: OAuthSettings, url: str, access_token: str) -> str:
    resp = _send(
        http,
        oauth.revoke_method,
        url,
        headers={"Authorization": f"Bearer {access_token}", "Accept": "application/json"},
    )
    if isinstance(resp, str):
        return resp
    error = _json_error(resp)
    if resp.status_code == 401 or error in _INVALID_TOKEN_ERRORS:
        return TokenRevocation.ALREADY_INVALID
    if 200 <= resp.status_code < 300 and error is None:
        return TokenRevocation.REVOKED
    return TokenRevocation.FAILED.because(error or provider_message(resp))


def _client_json(
    http: httpx.Client,
    oauth: OAuthSettings,
    url: str,
    creds: ClientCredentials,
    access_token: str,
) -> str:
    resp = _send(
        http,
        oauth.revoke_method,
        url,
        json={"access_token": access_token},
        auth=httpx.BasicAuth(creds.client_id, creds.client_secret),
        headers={"Accept": "application/json"},
    )
    if isinstance(resp, str):
        return resp
    if 200 <= resp.status_code < 300:
        return TokenRevocation.REVOKED
    return TokenRevocation.FAILED.because(provider_message(resp))


def revoke_grant(
    http: httpx.Client,
    oauth: OAuthSettings,
    creds: ClientCredentials,
    *,
    access_token: str | None,
    refresh_token: str | None,
) -> dict[str, str]:
    """Revoke at the provider; ``{"refresh_token"|"access_token": "revoked" | "already
    invalid" | "failed: …"}``. Never raises for what the provider answers."""
    url = oauth.revoke_url
    if not url:
        return {"provider": "the provider has no revocation endpoint"}
    if oauth.revocation == "bearer":
        return {"access_token": _bearer(http, oauth, url, access_token)} if access_token else {}
    if oauth.revocation == "client_json":
        if not access_token:
            return {}
        return {"access_token": _client_json(http, oauth, url, creds, access_token)}
    results: dict[str, str] = {}
    for kind, token in (("refresh_token", refresh_token), ("access_token", access_token)):
        if token is None:
            continue
        try:
            revoke_token(http, oauth, creds, token=token, token_type_hint=kind)
            results[kind] = TokenRevocation.REVOKED
        except BrokerError as exc:
            if exc.details.get("provider_error") in _INVALID_TOKEN_ERRORS:
                results[kind] = TokenRevocation.ALREADY_INVALID
            else:
                results[kind] = TokenRevocation.FAILED.because(exc.message)
    return results
