"""The OAuth 2 client flow (RFC 6749 authorization code, RFC 7636 PKCE S256,
RFC 7009 revocation), as authlib's protocol functions plus an injected httpx
client.

Protocol steps (building the authorize URL, the token and revocation
requests) come from authlib; this module adds client authentication, a
timeout, and errors that name what failed without ever echoing a token.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import httpx
from authlib.common.urls import url_decode
from authlib.oauth2.rfc6749.parameters import prepare_grant_uri, prepare_token_request
from authlib.oauth2.rfc7009.parameters import prepare_revoke_token_request
from authlib.oauth2.rfc7636 import create_s256_code_challenge

from broker.core.errors import ProviderError
from broker.core.manifest import OAuthSettings

__all__ = [
    "ClientCredentials",
    "Pkce",
    "TokenSet",
    "authorization_url",
    "exchange_code",
    "issuer_problem",
    "new_state",
    "refresh_tokens",
    "revoke_token",
]


@dataclass(frozen=True)
class Pkce:
    verifier: str
    challenge: str
    method: str = "S256"

    @classmethod
    def generate(cls) -> Pkce:
        # 64 URL-safe characters: within RFC 7636's 43-128, from its unreserved set.
        verifier = secrets.token_urlsafe(48)
        # types-Authlib leaves create_s256_code_challenge unannotated (it returns str)
        challenge: str = create_s256_code_challenge(verifier)  # type: ignore[no-untyped-call]
        return cls(verifier=verifier, challenge=challenge)

    def __repr__(self) -> str:
        return "Pkce(verifier=<redacted>)"


def new_state() -> str:
    return secrets.token_urlsafe(32)


@dataclass(frozen=True)
class ClientCredentials:
    client_id: str
    client_secret: str

    def __repr__(self) -> str:
        return f"ClientCredentials(client_id={self.client_id!r}, client_secret=<redacted>)"


@dataclass(frozen=True)
class TokenSet:
    access_token: str
    token_type: str = "Bearer"
    refresh_token: str | None = None
    expires_at: datetime | None = None
    scope: str | None = None

    def __repr__(self) -> str:
        return (
            f"TokenSet(token_type={self.token_type!r}, expires_at={self.expires_at!r}, "
            f"scope={self.scope!r}, refresh_token={'<redacted>' if self.refresh_token else None})"
        )

    @classmethod
    def from_response(
        cls,
        body: dict[str, Any],
        *,
        now: datetime | None = None,
        token_type: str = "bearer",  # noqa: S107 - a token type, not a secret
    ) -> TokenSet:
        """Parse a token response; ``token_type`` is what the manifest says the provider
        reports besides ``Bearer`` (Slack: ``bot``). Tokens are always used as Bearer."""
        access = body.get("access_token")
        if not isinstance(access, str) or not access:
            raise ProviderError("token endpoint answered without an access_token")
        reported = str(body.get("token_type") or "Bearer")
        if reported.lower() not in ("bearer", token_type.lower()):
            raise ProviderError(f"token endpoint issued an unsupported token_type {reported!r}")
        expires_at = None
        expires_in = body.get("expires_in")
        if expires_in is not None:
            seconds = _lifetime(expires_in)
            expires_at = (now or datetime.now(UTC)) + timedelta(seconds=seconds)
        refresh = body.get("refresh_token")
        scope = body.get("scope")
        return cls(
            access_token=access,
            token_type="Bearer",
            refresh_token=refresh if isinstance(refresh, str) and refresh else None,
            expires_at=expires_at,
            scope=" ".join(scope) if isinstance(scope, list) else scope,
        )


# The longest access-token lifetime taken at its word: ten years. Longer (10**12 would
# overflow a datetime) is a broken or hostile provider, not a real token.
MAX_EXPIRES_IN = 10 * 366 * 24 * 3600


def _lifetime(expires_in: Any) -> int:
    """RFC 6749 ``expires_in``: seconds, as a JSON integer (or, as some providers send
    it, an integral number or a string of digits), from 0 to ``MAX_EXPIRES_IN``; anything
    else is the provider's error, not ours."""
    if isinstance(expires_in, bool):
        seconds = None
    elif isinstance(expires_in, int):
        seconds = expires_in
    elif isinstance(expires_in, float) and expires_in.is_integer():
        seconds = int(expires_in)
    elif isinstance(expires_in, str) and expires_in.isascii() and expires_in.isdigit():
        seconds = int(expires_in) if len(expires_in) <= 12 else MAX_EXPIRES_IN + 1
    else:
        seconds = None
    if seconds is None:
        raise ProviderError("token endpoint sent a non-numeric expires_in")
    if not 0 <= seconds <= MAX_EXPIRES_IN:
        raise ProviderError(
            "token endpoint sent an expires_in out of range",
            details={"max_expires_in": MAX_EXPIRES_IN},
        )
    return seconds


def authorization_url(
    oauth: OAuthSettings,
    *,
    client_id: str,
    redirect_uri: str,
    state: str,
    pkce: Pkce,
    extra: dict[str, str] | None = None,
) -> str:
    # prepare_grant_uri returns the URI as str; types-Authlib says Any
    uri: str = prepare_grant_uri(
        oauth.authorize_url,
        client_id=client_id,
        response_type="code",
        redirect_uri=redirect_uri,
        scope=list(oauth.scopes) or None,
        state=state,
        code_challenge=pkce.challenge,
        code_challenge_method=pkce.method,
        **(extra or {}),
    )
    return uri


def _origin(url: str) -> tuple[str, str, int | None] | None:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    if not parts.scheme or not parts.hostname:
        return None
    scheme = parts.scheme.lower()
    return scheme, parts.hostname.lower(), port or {"https": 443, "http": 80}.get(scheme)


def issuer_problem(
    iss: str | None, *, expected: str | None, required: bool, authorize_url: str
) -> str | None:
    """Why an authorization response's ``iss`` (RFC 9207) is refused, or ``None``.

    With an ``expected`` issuer (the manifest's ``oauth.issuer``) ``iss`` must equal
    it exactly (RFC 9207 §2.4: simple string comparison). Without one, an ``iss`` the
    provider sends anyway must at least name the origin of the authorize URL the
    attempt was sent to. ``required`` (the provider's
    ``authorization_response_iss_parameter_supported``) refuses an answer without it."""
    if iss is None:
        if required:
            return "the provider's answer carries no iss, but this provider always sends one"
        return None
    if expected is not None:
        if iss != expected:
            return "the provider's answer names another issuer (iss); possible mix-up"
        return None
    if _origin(iss) is None or _origin(iss) != _origin(authorize_url):
        return "the provider's answer names an issuer (iss) on another origin; possible mix-up"
    return None


def _client_auth(
    oauth: OAuthSettings, creds: ClientCredentials, form: dict[str, str]
) -> tuple[dict[str, str], httpx.BasicAuth | None]:
    if oauth.token_endpoint_auth_method == "client_secret_post":
        return {**form, "client_id": creds.client_id, "client_secret": creds.client_secret}, None
    return form, httpx.BasicAuth(creds.client_id, creds.client_secret)


def _post_form(
    http: httpx.Client,
    url: str,
    form: dict[str, str],
    *,
    oauth: OAuthSettings,
    creds: ClientCredentials,
    what: str,
    timeout: float | None = None,
) -> httpx.Response:
    form, auth = _client_auth(oauth, creds, form)
    extra: dict[str, Any] = {} if timeout is None else {"timeout": timeout}
    try:
        return http.post(
            url,
            data=form,
            # None: no auth, not the client's default; httpx handles it, its annotation omits it
            auth=auth,  # type: ignore[arg-type]
            headers={"Accept": "application/json"},
            **extra,
        )
    except httpx.TimeoutException:
        raise ProviderError(f"{what} timed out", details={"endpoint": url}) from None
    except httpx.HTTPError as exc:
        raise ProviderError(
            f"{what} could not be reached ({type(exc).__name__})", details={"endpoint": url}
        ) from None


def _json_object(resp: httpx.Response) -> dict[str, Any]:
    """The answer's JSON object, or ``{}`` when it is not one."""
    try:
        body = resp.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _error_code(resp: httpx.Response) -> tuple[str, str | None]:
    """The OAuth ``error`` (or ``http_<status>``) and ``error_description`` of an answer."""
    body = _json_object(resp)
    error = str(body.get("error") or f"http_{resp.status_code}")[:100]
    description = body.get("error_description")
    return error, description[:200] if isinstance(description, str) and description else None


def _token_response(
    resp: httpx.Response,
    *,
    what: str,
    token_type: str = "bearer",  # noqa: S107 - a token type, not a secret
) -> TokenSet:
    body = _json_object(resp)
    if resp.status_code >= 400 or "error" in body:
        error, description = _error_code(resp)
        message = f"{what} refused: {error}"
        if description:
            message += f" ({description})"
        raise ProviderError(message, details={"status": resp.status_code, "provider_error": error})
    return TokenSet.from_response(body, token_type=token_type)


def exchange_code(
    http: httpx.Client,
    oauth: OAuthSettings,
    creds: ClientCredentials,
    *,
    code: str,
    redirect_uri: str,
    pkce_verifier: str,
) -> TokenSet:
    body = prepare_token_request(
        "authorization_code", code=code, redirect_uri=redirect_uri, code_verifier=pkce_verifier
    )
    resp = _post_form(
        http,
        oauth.token_url,
        dict(url_decode(body)),
        oauth=oauth,
        creds=creds,
        what="the provider's token endpoint",
    )
    return _token_response(resp, what="the provider's token endpoint", token_type=oauth.token_type)


def refresh_tokens(
    http: httpx.Client,
    oauth: OAuthSettings,
    creds: ClientCredentials,
    *,
    refresh_token: str,
    timeout: float | None = None,
) -> TokenSet:
    """Use a refresh token; a provider that does not rotate keeps the old one.
    ``timeout`` (seconds) replaces the client's for this request."""
    body = prepare_token_request("refresh_token", refresh_token=refresh_token)
    resp = _post_form(
        http,
        oauth.token_url,
        dict(url_decode(body)),
        oauth=oauth,
        creds=creds,
        what="token refresh",
        timeout=timeout,
    )
    tokens = _token_response(resp, what="token refresh", token_type=oauth.token_type)
    if tokens.refresh_token is None:
        tokens = TokenSet(
            access_token=tokens.access_token,
            refresh_token=refresh_token,
            expires_at=tokens.expires_at,
            scope=tokens.scope,
        )
    return tokens


def revoke_token(
    http: httpx.Client,
    oauth: OAuthSettings,
    creds: ClientCredentials,
    *,
    token: str,
    token_type_hint: str,
) -> None:
    """RFC 7009 revocation; raises ProviderError when the provider refuses."""
    if not oauth.revoke_url:
        raise ProviderError("the provider has no revocation endpoint")
    body, _headers = prepare_revoke_token_request(token, token_type_hint)
    resp = _post_form(
        http,
        oauth.revoke_url,
        dict(url_decode(body)),
        oauth=oauth,
        creds=creds,
        what="the provider's revocation endpoint",
    )
    if not 200 <= resp.status_code < 300:
        error, _description = _error_code(resp)
        raise ProviderError(
            f"the provider's revocation endpoint answered HTTP {resp.status_code}",
            details={"status": resp.status_code, "provider_error": error},
        )
