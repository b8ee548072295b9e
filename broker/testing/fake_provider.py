"""A fake third party built from a manifest, on respx: OAuth and API, no network.

:class:`FakeProvider` answers, through ``provider.transport`` (an
``httpx.MockTransport`` over a ``respx.MockRouter``):

- the authorize endpoint (``provider.authorize(url)`` plays the user pressing
  Allow: it checks ``client_id``, ``redirect_uri``, ``state`` and the S256 PKCE
  challenge and returns the callback URL with a code);
- the token endpoint: ``authorization_code`` (code, redirect URI, PKCE verifier
  and client authentication checked) and ``refresh_token`` (rotating the refresh
  token), answering in the shape ``token_response`` gives (the real provider's);
- the revocation endpoint, in the manifest's ``oauth.revocation`` style;
- every action URL (``201 {"id": …}`` unless you install your own answer with
  :meth:`FakeProvider.api`), each checking the bearer token first (``401``).

Every API request is kept in ``provider.requests`` (OAuth traffic is not), so
tests can inspect exactly what a connector sent.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import respx

from broker.core.connector import Connector
from broker.core.manifest import Manifest
from broker.core.placeholders import render_url

__all__ = ["FakeProvider", "IssuedTokens", "standard_token_response"]

Handler = Callable[[httpx.Request], httpx.Response]


@dataclass(frozen=True)
class IssuedTokens:
    access_token: str
    refresh_token: str | None
    scope: str
    expires_in: int | None


def standard_token_response(tokens: IssuedTokens) -> dict[str, Any]:
    """RFC 6749 section 5.1."""
    body: dict[str, Any] = {"access_token": tokens.access_token, "token_type": "Bearer"}
    if tokens.expires_in is not None:
        body["expires_in"] = tokens.expires_in
    if tokens.refresh_token is not None:
        body["refresh_token"] = tokens.refresh_token
    body["scope"] = tokens.scope
    return body


def _form(request: httpx.Request) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(request.content.decode()).items()}


def _s256(verifier: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).decode().rstrip("=")


@dataclass
class _Code:
    redirect_uri: str
    challenge: str
    scope: str


@dataclass
class FakeProvider:
    manifest: Manifest
    settings: Mapping[str, str] = field(default_factory=dict)
    client_id: str = "fake-client-id"
    client_secret: str = "fake-client-secret"
    token_response: Callable[[IssuedTokens], dict[str, Any]] = standard_token_response
    issue_refresh_tokens: bool = True
    rotate_refresh_tokens: bool = True
    expires_in: int | None = 3600
    unauthorized: Callable[[], httpx.Response] = field(
        default=lambda: httpx.Response(401, json={"error": "invalid_token"})
    )
    revoke_response: Callable[[bool], httpx.Response] = field(
        default=lambda active: httpx.Response(200, json={})
    )

    def __post_init__(self) -> None:
        self.router = respx.MockRouter(assert_all_called=False, assert_all_mocked=True)
        self.transport = httpx.MockTransport(self.router.handler)
        self.settings = self.manifest.validate_settings(dict(self.settings))  # defaults in
        values = {**self.settings, "client_id": self.client_id}
        self.oauth = Connector(self.manifest).oauth_settings(values)
        self.requests: list[httpx.Request] = []
        self.responses: list[httpx.Response] = []
        self.token_requests: list[str] = []
        self.revocations: list[dict[str, str]] = []
        self.access_tokens: dict[str, bool] = {}
        self.refresh_tokens: dict[str, bool] = {}
        self._codes: dict[str, _Code] = {}
        self._token_of_refresh: dict[str, str] = {}
        self.router.post(self.oauth.token_url).mock(side_effect=self._token)
        if self.oauth.revoke_url:
            method = "POST" if self.oauth.revocation == "rfc7009" else self.oauth.revoke_method
            self.router.route(method=method, url=self.oauth.revoke_url).mock(
                side_effect=self._revoke
            )
        for action in self.manifest.actions:
            url = render_url(action.url, self.settings)
            self.api(action.method.upper(), url, self._default_action(action.name))

    # -- what tests use -----------------------------------------------------------------

    @property
    def hosts(self) -> set[str]:
        """Every host this provider answers for (OAuth endpoints, actions, ``hosts``)."""
        urls = [self.oauth.authorize_url, self.oauth.token_url, self.oauth.revoke_url or ""]
        urls += [render_url(a.url, self.settings) for a in self.manifest.actions]
        urls += [f"https://{render_url(h, self.settings)}/" for h in self.manifest.hosts]
        return {urlsplit(u).hostname or "" for u in urls if u}

    def api(self, method: str, url: str | None = None, handler: Any = None, **match: Any) -> None:
        """Answer ``method url`` (or a respx pattern such as ``url__regex=…``) with
        ``handler`` (a function of the request, a ``Response``, or a JSON-able value
        sent as 200) after checking the bearer token. Later calls take precedence."""
        if url is not None:
            match["url"] = url

        def respond(request: httpx.Request, **_groups: Any) -> httpx.Response:
            self.requests.append(request)
            if not self.bearer_ok(request):
                resp = self.unauthorized()
            elif callable(handler):
                resp = handler(request)
            elif isinstance(handler, httpx.Response):
                resp = handler
            else:
                resp = httpx.Response(200, json=handler)
            self.responses.append(resp)
            return resp

        route = respx.Route(method=method, **match)
        route.mock(side_effect=respond)
        self.router.routes.add(route, name=None)
        # newest first: move the route we just added to the front of the router
        routes = list(self.router.routes)
        self.router.routes.clear()
        for r in [routes[-1], *routes[:-1]]:
            self.router.routes.add(r)

    def authorize(self, authorize_url: str, *, allow: bool = True) -> str:
        """The user at the provider: returns the redirect back to the broker."""
        assert authorize_url.startswith(self.oauth.authorize_url), authorize_url
        query = {k: v[0] for k, v in parse_qs(urlsplit(authorize_url).query).items()}
        assert query.get("client_id") == self.client_id, "wrong client_id"
        assert query.get("response_type") == "code"
        assert query.get("code_challenge_method") == "S256", "PKCE S256 is required"
        redirect_uri, state = query["redirect_uri"], query["state"]
        if not allow:
            return f"{redirect_uri}?{urlencode({'error': 'access_denied', 'state': state})}"
        code = secrets.token_urlsafe(16)
        self._codes[code] = _Code(redirect_uri, query["code_challenge"], query.get("scope", ""))
        return f"{redirect_uri}?{urlencode({'code': code, 'state': state})}"

    def bearer_ok(self, request: httpx.Request) -> bool:
        auth = request.headers.get("authorization", "")
        return auth.startswith("Bearer ") and self.access_tokens.get(auth[7:], False)

    def expire_access_tokens(self) -> None:
        for token in self.access_tokens:
            self.access_tokens[token] = False

    def is_active(self, token: str) -> bool:
        return self.access_tokens.get(token, False) or self.refresh_tokens.get(token, False)

    def issue(self, scope: str = "", *, refresh: bool = True) -> IssuedTokens:
        """New tokens, active at once (tests may call it to get a usable token)."""
        access = "fake-at-" + secrets.token_urlsafe(12)
        refresh_token = None
        if refresh and self.issue_refresh_tokens:
            refresh_token = "fake-rt-" + secrets.token_urlsafe(12)
        self.access_tokens[access] = True
        if refresh_token:
            self.refresh_tokens[refresh_token] = True
            self._token_of_refresh[refresh_token] = access
        scope = scope or " ".join(self.oauth.scopes)
        return IssuedTokens(access, refresh_token, scope, self.expires_in)

    # -- endpoints ----------------------------------------------------------------------

    def _client_ok(self, request: httpx.Request, form: Mapping[str, Any]) -> bool:
        pair = f"{self.client_id}:{self.client_secret}".encode()
        if request.headers.get("authorization") == "Basic " + base64.b64encode(pair).decode():
            return True
        return (form.get("client_id"), form.get("client_secret")) == (
            self.client_id,
            self.client_secret,
        )

    def _token(self, request: httpx.Request) -> httpx.Response:
        form = _form(request)
        grant = form.get("grant_type", "")
        self.token_requests.append(grant)
        if not self._client_ok(request, form):
            return httpx.Response(401, json={"error": "invalid_client"})
        if grant == "authorization_code":
            code = self._codes.pop(form.get("code", ""), None)
            if code is None or code.redirect_uri != form.get("redirect_uri"):
                return httpx.Response(400, json={"error": "invalid_grant"})
            if _s256(form.get("code_verifier", "")) != code.challenge:
                return httpx.Response(400, json={"error": "invalid_grant"})
            return httpx.Response(200, json=self.token_response(self.issue(code.scope)))
        if grant == "refresh_token":
            old = form.get("refresh_token", "")
            if not self.refresh_tokens.get(old):
                return httpx.Response(400, json={"error": "invalid_grant"})
            if not self.rotate_refresh_tokens:  # e.g. Google: the refresh token stays
                access = self.issue(refresh=False)
                self._token_of_refresh[old] = access.access_token
                return httpx.Response(200, json=self.token_response(access))
            self.refresh_tokens[old] = False
            return httpx.Response(200, json=self.token_response(self.issue()))
        return httpx.Response(400, json={"error": "unsupported_grant_type"})

    def _revoke(self, request: httpx.Request) -> httpx.Response:
        style = self.oauth.revocation
        if style == "rfc7009":
            form = _form(request)
            if not self._client_ok(request, form):
                return httpx.Response(401, json={"error": "invalid_client"})
            token = form.get("token", "")
        elif style == "bearer":
            if not self.bearer_ok(request):
                return self.unauthorized()
            token = request.headers["authorization"][7:]
        else:
            if not self._client_ok(request, {}):
                return httpx.Response(401, json={"message": "Requires authentication"})
            token = json.loads(request.content or b"{}").get("access_token", "")
        known = token in self.access_tokens or token in self.refresh_tokens
        active = self.is_active(token)
        self.revocations.append({"style": style, "token": token, "known": str(known)})
        for table in (self.access_tokens, self.refresh_tokens):
            if token in table:
                table[token] = False
        if token in self._token_of_refresh:  # revoking the grant ends its access token too
            self.access_tokens[self._token_of_refresh[token]] = False
        return self.revoke_response(active)

    def _default_action(self, name: str) -> Handler:
        def handler(request: httpx.Request) -> httpx.Response:
            return httpx.Response(201, json={"id": f"{name}-{len(self.requests)}"})

        return handler
