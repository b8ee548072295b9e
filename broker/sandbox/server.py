"""The sandbox's OAuth 2 authorization server, assembled from authlib's server components.

* :rfc:`6749` authorization code grant, with :rfc:`7636` PKCE required and S256 only;
* :rfc:`6749` §6 refresh token grant with rotation: every refresh answers a new refresh
  token and retires the one presented;
* :rfc:`7009` token revocation;
* :rfc:`6750` bearer token validation for the sandbox API.

Clients are confidential and authenticate with ``client_secret_basic`` or
``client_secret_post`` at every endpoint.
"""

from __future__ import annotations

import json
import logging
import secrets
import uuid
from typing import Any, cast

from authlib.oauth2.rfc6749 import (
    AuthorizationCodeGrant,
    AuthorizationServer,
    ClientMixin,
    InvalidRequestError,
    OAuth2Error,
    OAuth2Request,
    RefreshTokenGrant,
    ResourceProtector,
)
from authlib.oauth2.rfc6750 import BearerTokenGenerator, BearerTokenValidator
from authlib.oauth2.rfc7009 import RevocationEndpoint
from authlib.oauth2.rfc7636 import CodeChallenge
from starlette.responses import Response

from .models import (
    CLIENT_AUTH_METHODS,
    AuthorizationCode,
    IssuedToken,
    RegisteredClient,
)
from .provider import SandboxProvider
from .requests import IncomingRequest, SandboxJsonRequest, SandboxOAuth2Request

__all__ = ["SandboxAuthorizationServer", "create_resource_protector"]


class _DropIssuedTokens(logging.Filter):
    """authlib's grants log every issued token dict at DEBUG ("Issue token %r to %r")."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(("Issue token", "Grant token"))


for _name in ("authorization_code", "refresh_token"):
    logging.getLogger(f"authlib.oauth2.rfc6749.grants.{_name}").addFilter(_DropIssuedTokens())


def _new_token(**_context: Any) -> str:
    return secrets.token_urlsafe(32)


class _RequireS256(CodeChallenge):
    """PKCE for every client, S256 only.

    authlib's ``CodeChallenge(required=True)`` only insists on a ``code_verifier`` from
    public clients (``auth_method == "none"``) and accepts an authorization request with no
    challenge at all; the sandbox refuses both a missing challenge and ``plain``.
    """

    SUPPORTED_CODE_CHALLENGE_METHOD = ["S256"]

    def validate_code_challenge(self, grant: Any, redirect_uri: str) -> None:
        data = grant.request.payload.data
        if not data.get("code_challenge"):
            raise InvalidRequestError("PKCE is required: missing 'code_challenge'.")
        if data.get("code_challenge_method") != "S256":
            raise InvalidRequestError("PKCE 'code_challenge_method' must be 'S256'.")
        super().validate_code_challenge(grant, redirect_uri)


class _AuthorizationCodeGrant(AuthorizationCodeGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = CLIENT_AUTH_METHODS

    @property
    def provider(self) -> SandboxProvider:
        return self.server.provider

    def save_authorization_code(self, code: str, request: OAuth2Request) -> None:
        # authlib saves a code once it has parsed the payload, authenticated the client and
        # been given the user: none is None here (types-Authlib says each may be)
        data = request.payload.data  # type: ignore[union-attr]
        self.provider.store_code(
            AuthorizationCode(
                code=code,
                client_id=request.client.get_client_id(),  # type: ignore[union-attr]
                redirect_uri=request.payload.redirect_uri,  # type: ignore[union-attr]
                scope=request.scope,
                user_id=request.user,  # type: ignore[arg-type]
                code_challenge=data["code_challenge"],
                code_challenge_method=data["code_challenge_method"],
                grant_id=uuid.uuid4().hex,
            )
        )

    def query_authorization_code(self, code: str, client: ClientMixin) -> AuthorizationCode | None:
        return self.provider.find_code(code, client.get_client_id())

    def delete_authorization_code(self, authorization_code: AuthorizationCode) -> None:
        self.provider.consume_code(authorization_code)

    def authenticate_user(self, authorization_code: AuthorizationCode) -> str:
        return authorization_code.user_id


class _RotatingRefreshTokenGrant(RefreshTokenGrant):
    # authlib's defaults: no new refresh token, and HTTP Basic only.
    INCLUDE_NEW_REFRESH_TOKEN = True
    TOKEN_ENDPOINT_AUTH_METHODS = CLIENT_AUTH_METHODS

    @property
    def provider(self) -> SandboxProvider:
        return self.server.provider

    # authlib answers invalid_grant for None (types-Authlib says a token is always found),
    # and hands revoke_old_credential the token found here
    def authenticate_refresh_token(self, refresh_token: str) -> IssuedToken | None:  # type: ignore[override]
        return self.provider.find_active_refresh_token(refresh_token)

    def authenticate_user(self, refresh_token: IssuedToken) -> str:
        return refresh_token.user_id

    def revoke_old_credential(self, refresh_token: IssuedToken) -> None:  # type: ignore[override]
        self.provider.retire_refresh_token(refresh_token)


class _RevocationEndpoint(RevocationEndpoint):
    CLIENT_AUTH_METHODS = CLIENT_AUTH_METHODS  # authlib's default is HTTP Basic only

    @property
    def provider(self) -> SandboxProvider:
        return self.server.provider

    def query_token(self, token_string: str, token_type_hint: str | None) -> IssuedToken | None:
        # The hint only orders the search (RFC 7009 §2.1); inactive tokens are not found,
        # so revoking them again is a quiet 200.
        by_access = self.provider.find_access_token(token_string)
        by_access = by_access if by_access is not None and not by_access.is_revoked() else None
        by_refresh = self.provider.find_active_refresh_token(token_string)
        if token_type_hint == "refresh_token":
            return by_refresh or by_access
        return by_access or by_refresh

    def revoke_token(self, token: IssuedToken, request: OAuth2Request) -> None:
        if token.refresh_token is not None and secrets.compare_digest(
            token.refresh_token, request.form["token"]
        ):
            self.provider.revoke_refresh_token(token)
        else:
            self.provider.revoke_access_token(token)


class SandboxAuthorizationServer(AuthorizationServer):
    """authlib's generic server bound to a :class:`SandboxProvider` and Starlette responses."""

    def __init__(self, provider: SandboxProvider) -> None:
        super().__init__()
        self.provider = provider
        self.register_token_generator(
            "default",
            BearerTokenGenerator(  # read per token: tests shorten it on a live provider
                _new_token, _new_token, lambda _client, _grant: provider.access_token_ttl
            ),
        )
        self.register_grant(_AuthorizationCodeGrant, [_RequireS256(required=True)])
        self.register_grant(_RotatingRefreshTokenGrant)
        self.register_endpoint(_RevocationEndpoint)

    # authlib answers invalid_client for None (types-Authlib says a client is always found)
    def query_client(self, client_id: str) -> RegisteredClient | None:  # type: ignore[override]
        client = self.provider.find_client(client_id)
        return RegisteredClient(client) if client is not None else None

    def save_token(self, token: dict[str, Any], request: OAuth2Request) -> None:
        parent = request.authorization_code or request.refresh_token
        self.provider.store_token(
            IssuedToken(
                access_token=token["access_token"],
                refresh_token=token.get("refresh_token"),
                # authlib saves a token for an authenticated client, a user and the code or
                # refresh token it was granted on (types-Authlib says each may be None)
                client_id=request.client.get_client_id(),  # type: ignore[union-attr]
                scope=token.get("scope", ""),
                user_id=request.user,  # type: ignore[arg-type]
                grant_id=parent.grant_id,  # type: ignore[union-attr]
                expires_in=token.get("expires_in", self.provider.access_token_ttl),
            )
        )

    def create_oauth2_request(self, request: Any) -> OAuth2Request:
        if isinstance(request, OAuth2Request):
            return request
        return SandboxOAuth2Request(request)

    def create_json_request(self, request: IncomingRequest) -> SandboxJsonRequest:
        return SandboxJsonRequest(request)

    # authlib passes the headers as a list of pairs (types-Authlib: a Mapping)
    def handle_response(  # type: ignore[override]
        self, status: int, body: Any, headers: list[tuple[str, str]]
    ) -> Response:
        content = json.dumps(body) if isinstance(body, dict) else body
        response = Response(content=content, status_code=status)
        for name, value in headers:
            response.headers.append(name, value)
        return response

    def handle_error_response(self, request: OAuth2Request | None, error: OAuth2Error) -> Response:
        """authlib's, typed as it behaves here (types-Authlib: a request, and object): the
        request may be None, for an error raised before one was built; the answer is
        :meth:`handle_response`'s."""
        answer = super().handle_error_response(request, error)  # type: ignore[arg-type]
        return cast(Response, answer)

    def send_signal(self, name: str, *args: Any, **kwargs: Any) -> None:
        """authlib's hook for framework signals; the sandbox has no listeners."""


class _BearerValidator(BearerTokenValidator):
    def __init__(self, provider: SandboxProvider) -> None:
        super().__init__()
        self.provider = provider

    def authenticate_token(self, token_string: str) -> IssuedToken | None:
        return self.provider.find_access_token(token_string)


def create_resource_protector(provider: SandboxProvider) -> ResourceProtector:
    """An RFC 6750 protector: expired, revoked or unknown tokens raise ``InvalidTokenError``."""
    protector = ResourceProtector()
    protector.register_token_validator(_BearerValidator(provider))
    return protector
