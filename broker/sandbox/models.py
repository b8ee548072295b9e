"""In-memory records of the sandbox provider: clients, codes, tokens and received requests.

The ``*Mixin`` bases are authlib's model contracts (:rfc:`6749`): authlib's grants and
endpoints only ever talk to these objects through the mixin methods.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from authlib.oauth2.rfc6749 import (
    AuthorizationCodeMixin,
    ClientMixin,
    TokenMixin,
    list_to_scope,
    scope_to_list,
)

__all__ = [
    "AUTHORIZATION_CODE_TTL",
    "CLIENT_AUTH_METHODS",
    "DEFAULT_SCOPES",
    "AuthorizationCode",
    "IssuedToken",
    "ReceivedRequest",
    "RegisteredClient",
    "SandboxClient",
]

DEFAULT_SCOPES = ("messages:write", "profile")
#: Confidential clients only: HTTP Basic or the secret in the form body, never "none".
CLIENT_AUTH_METHODS = ["client_secret_basic", "client_secret_post"]
#: Seconds an authorization code stays redeemable (RFC 6749 §4.1.2 recommends <= 10 min).
AUTHORIZATION_CODE_TTL = 600
_GRANT_TYPES = frozenset({"authorization_code", "refresh_token"})


@dataclass
class SandboxClient:
    """A client registered with the sandbox, as a third party's developer console would."""

    client_id: str
    client_secret: str
    redirect_uris: list[str]
    scopes: list[str] = field(default_factory=lambda: list(DEFAULT_SCOPES))


@dataclass(frozen=True)
class ReceivedRequest:
    """One request the sandbox API accepted (answered 201).

    ``headers`` has lower-case names and the credentials redacted; ``size`` and ``sha256``
    describe the raw body exactly as it arrived.
    """

    action: str
    method: str
    path: str
    body: Any
    headers: dict[str, str]
    received_at: datetime
    id: str
    size: int = 0
    sha256: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "action": self.action,
            "method": self.method,
            "path": self.path,
            "body": self.body,
            "headers": self.headers,
            "received_at": self.received_at.isoformat(),
            "size": self.size,
            "sha256": self.sha256,
        }


class RegisteredClient(ClientMixin):
    """authlib's view of a :class:`SandboxClient`."""

    def __init__(self, client: SandboxClient) -> None:
        self.client = client

    def get_client_id(self) -> str:
        return self.client.client_id

    # authlib takes None from these two (types-Authlib says str): no default URI, and a
    # scope refused
    def get_default_redirect_uri(self) -> str | None:  # type: ignore[override]
        # No default: every authorization request must name one of the registered URIs.
        return None

    def get_allowed_scope(self, scope: str | None) -> str | None:  # type: ignore[override]
        """The requested scope if the client may have all of it; its full scope if omitted.

        ``None`` makes authlib answer ``invalid_scope``: the sandbox never silently narrows.
        """
        if not scope:
            return list_to_scope(self.client.scopes)
        requested = scope_to_list(scope)
        if not set(requested) <= set(self.client.scopes):
            return None
        return list_to_scope(requested)

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        return redirect_uri in self.client.redirect_uris  # exact string match

    def check_client_secret(self, client_secret: str) -> bool:
        return secrets.compare_digest(self.client.client_secret.encode(), client_secret.encode())

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        return method in CLIENT_AUTH_METHODS

    def check_response_type(self, response_type: str) -> bool:
        return response_type == "code"

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type in _GRANT_TYPES


@dataclass
class AuthorizationCode(AuthorizationCodeMixin):
    code: str
    client_id: str
    redirect_uri: str
    scope: str
    user_id: str
    code_challenge: str
    code_challenge_method: str
    #: Every token descended from this authorization shares it (revocation kills the family).
    grant_id: str
    expires_at: float = field(default_factory=lambda: time.time() + AUTHORIZATION_CODE_TTL)

    def get_redirect_uri(self) -> str:
        return self.redirect_uri

    def get_scope(self) -> str:
        return self.scope

    def is_expired(self) -> bool:
        return time.time() >= self.expires_at


@dataclass
class IssuedToken(TokenMixin):
    """One token response: an access token and (optionally) the refresh token issued with it."""

    access_token: str
    refresh_token: str | None
    client_id: str
    scope: str
    user_id: str
    grant_id: str
    expires_in: int
    issued_at: float = field(default_factory=time.time)
    access_revoked: bool = False
    access_expired: bool = False
    #: Set when revoked, and when rotated out by a refresh.
    refresh_revoked: bool = False

    def check_client(self, client: ClientMixin) -> bool:
        return client.get_client_id() == self.client_id

    def get_scope(self) -> str:
        return self.scope

    def get_expires_in(self) -> int:
        return self.expires_in

    def is_expired(self) -> bool:
        return self.access_expired or time.time() >= self.issued_at + self.expires_in

    def is_revoked(self) -> bool:
        return self.access_revoked

    def get_user(self) -> str:
        return self.user_id

    def access_active(self) -> bool:
        return not (self.is_expired() or self.is_revoked())

    def refresh_active(self) -> bool:
        return self.refresh_token is not None and not self.refresh_revoked
