"""The OAuth 2 client flow: PKCE, state, the authorize URL, and token/revoke requests
against respx-mocked provider endpoints (no network)."""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import respx
from authlib.oauth2.rfc7636 import create_s256_code_challenge

from broker.core.errors import ProviderError
from broker.core.manifest import OAuthSettings
from broker.core.oauth import (
    ClientCredentials,
    Pkce,
    TokenSet,
    authorization_url,
    exchange_code,
    new_state,
    refresh_tokens,
    revoke_token,
)

AUTHORIZE = "https://provider.example.com/oauth/authorize"
TOKEN_URL = "https://provider.example.com/oauth/token"
REVOKE_URL = "https://provider.example.com/oauth/revoke"
REDIRECT = "https://broker.example.com/oauth/callback"

CLIENT_ID = "broker-client"
CLIENT_SECRET = "s3cr3t-client-value"
CODE = "auth-code-Splx+lOB/eZQ=&x"  # characters that must survive form encoding
VERIFIER = "v" * 20 + "-._~" + "V" * 30
ACCESS = "at-9f8e7d6c5b4a"
REFRESH = "rt-0a1b2c3d4e5f"
NEW_REFRESH = "rt-new-77777777"

SECRETS = (CLIENT_SECRET, CODE, VERIFIER, ACCESS, REFRESH, NEW_REFRESH)
UNRESERVED = re.compile(r"^[A-Za-z0-9\-._~]+$")


def settings(**changes: Any) -> OAuthSettings:
    values: dict[str, Any] = {
        "authorize_url": AUTHORIZE,
        "token_url": TOKEN_URL,
        "revoke_url": REVOKE_URL,
        "scopes": ["messages:write", "profile"],
        "client_id": "env:EXAMPLE_CLIENT_ID",
        "client_secret": "env:EXAMPLE_CLIENT_SECRET",
    }
    values.update(changes)
    return OAuthSettings(**values)


CREDS = ClientCredentials(CLIENT_ID, CLIENT_SECRET)
BASIC = "Basic " + base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()


@pytest.fixture
def mock() -> Iterator[respx.MockRouter]:
    with respx.mock(assert_all_mocked=True, assert_all_called=False) as router:
        yield router


@pytest.fixture(scope="module")
def http() -> Iterator[httpx.Client]:
    # one client for the module (building its TLS context is the slow part); respx
    # intercepts at the transport, so each test's router still sees only its requests
    with httpx.Client(timeout=5) as client:
        yield client


def form(request: httpx.Request) -> dict[str, str]:
    parsed = parse_qs(request.content.decode(), keep_blank_values=True, strict_parsing=True)
    assert all(len(v) == 1 for v in parsed.values()), parsed
    return {k: v[0] for k, v in parsed.items()}


def assert_no_secrets(err: ProviderError) -> None:
    text = str(err) + json.dumps(err.to_dict()) + repr(err.details)
    for secret in SECRETS:
        assert secret not in text, f"{secret!r} leaked into {text!r}"


# --- PKCE and state -----------------------------------------------------------------


def test_pkce_verifier_length_and_charset() -> None:
    for _ in range(50):
        pkce = Pkce.generate()
        assert 43 <= len(pkce.verifier) <= 128
        assert UNRESERVED.match(pkce.verifier)
        assert pkce.method == "S256"


def test_pkce_challenge_is_unpadded_base64url_sha256_of_the_verifier() -> None:
    for _ in range(20):
        pkce = Pkce.generate()
        digest = hashlib.sha256(pkce.verifier.encode("ascii")).digest()
        expected = base64.urlsafe_b64encode(digest).decode().rstrip("=")
        assert pkce.challenge == expected
        assert "=" not in pkce.challenge
        assert len(pkce.challenge) == 43
        assert pkce.challenge != pkce.verifier


def test_pkce_rfc7636_appendix_b_vector() -> None:
    """The worked example of RFC 7636, Appendix B."""
    verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
    expected = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
    assert challenge.decode().rstrip("=") == expected
    # the library the module builds its challenge with agrees on the RFC's vector
    assert create_s256_code_challenge(verifier) == expected


def test_pkce_verifiers_are_unique() -> None:
    assert len({Pkce.generate().verifier for _ in range(200)}) == 200


def test_state_is_unique_and_high_entropy() -> None:
    states = [new_state() for _ in range(500)]
    assert len(set(states)) == len(states)
    for state in states:
        assert UNRESERVED.match(state)
        assert len(state) >= 43  # at least 256 bits, base64url
    assert len(set("".join(states))) > 50, "uses the whole base64url alphabet"


# --- the authorize URL --------------------------------------------------------------


def test_authorization_url_carries_every_parameter() -> None:
    pkce = Pkce.generate()
    state = new_state()
    url = authorization_url(
        settings(), client_id=CLIENT_ID, redirect_uri=REDIRECT, state=state, pkce=pkce
    )
    parts = urlsplit(url)
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == AUTHORIZE
    q = parse_qs(parts.query, strict_parsing=True)
    assert q == {
        "response_type": ["code"],
        "client_id": [CLIENT_ID],
        "redirect_uri": [REDIRECT],
        "scope": ["messages:write profile"],
        "state": [state],
        "code_challenge": [pkce.challenge],
        "code_challenge_method": ["S256"],
    }
    assert pkce.verifier not in url, "the verifier never goes to the browser"


def test_authorization_url_without_scopes_has_no_scope_param() -> None:
    url = authorization_url(
        settings(scopes=[]),
        client_id=CLIENT_ID,
        redirect_uri=REDIRECT,
        state="st",
        pkce=Pkce.generate(),
    )
    assert "scope" not in parse_qs(urlsplit(url).query)


def test_authorization_url_extra_params_and_existing_query_are_kept() -> None:
    url = authorization_url(
        settings(authorize_url=AUTHORIZE + "?tenant=acme"),
        client_id="client id&x",
        redirect_uri=REDIRECT + "?a=1&b=2",
        state="st",
        pkce=Pkce.generate(),
        extra={"prompt": "consent", "access_type": "offline"},
    )
    q = parse_qs(urlsplit(url).query)
    assert q["tenant"] == ["acme"]
    assert q["prompt"] == ["consent"]
    assert q["access_type"] == ["offline"]
    assert q["client_id"] == ["client id&x"], "values are encoded, not injected"
    assert q["redirect_uri"] == [REDIRECT + "?a=1&b=2"]
    assert q["state"] == ["st"]


# --- exchange_code ------------------------------------------------------------------


def test_exchange_code_with_client_secret_basic(mock: respx.MockRouter, http: httpx.Client) -> None:
    route = mock.post(TOKEN_URL).respond(
        200,
        json={
            "access_token": ACCESS,
            "token_type": "Bearer",
            "refresh_token": REFRESH,
            "expires_in": 3600,
            "scope": "messages:write profile",
        },
    )
    before = datetime.now(UTC)
    tokens = exchange_code(
        http, settings(), CREDS, code=CODE, redirect_uri=REDIRECT, pkce_verifier=VERIFIER
    )
    after = datetime.now(UTC)
    assert route.call_count == 1
    request = route.calls.last.request
    assert request.headers["Authorization"] == BASIC
    assert request.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert request.headers["Accept"] == "application/json"
    assert form(request) == {
        "grant_type": "authorization_code",
        "code": CODE,
        "redirect_uri": REDIRECT,
        "code_verifier": VERIFIER,
    }
    assert tokens.access_token == ACCESS
    assert tokens.refresh_token == REFRESH
    assert tokens.token_type == "Bearer"
    assert tokens.scope == "messages:write profile"
    assert tokens.expires_at is not None
    assert before + timedelta(seconds=3600) <= tokens.expires_at <= after + timedelta(seconds=3600)


def test_exchange_code_with_client_secret_post(mock: respx.MockRouter, http: httpx.Client) -> None:
    route = mock.post(TOKEN_URL).respond(200, json={"access_token": ACCESS})
    exchange_code(
        http,
        settings(token_endpoint_auth_method="client_secret_post"),
        CREDS,
        code=CODE,
        redirect_uri=REDIRECT,
        pkce_verifier=VERIFIER,
    )
    request = route.calls.last.request
    assert "Authorization" not in request.headers
    assert form(request) == {
        "grant_type": "authorization_code",
        "code": CODE,
        "redirect_uri": REDIRECT,
        "code_verifier": VERIFIER,
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
    }


def test_basic_auth_does_not_also_post_the_secret(
    mock: respx.MockRouter, http: httpx.Client
) -> None:
    route = mock.post(TOKEN_URL).respond(200, json={"access_token": ACCESS})
    exchange_code(http, settings(), CREDS, code=CODE, redirect_uri=REDIRECT, pkce_verifier=VERIFIER)
    assert CLIENT_SECRET.encode() not in route.calls.last.request.content


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (400, {"error": "invalid_grant", "error_description": "The code has expired"}),
        (401, {"error": "invalid_client"}),
        (200, {"error": "invalid_grant"}),  # some providers answer errors with 200
    ],
)
def test_error_json_becomes_provider_error_with_the_provider_code(
    mock: respx.MockRouter, http: httpx.Client, status: int, body: dict[str, str]
) -> None:
    mock.post(TOKEN_URL).respond(status, json=body)
    with pytest.raises(ProviderError) as info:
        exchange_code(
            http, settings(), CREDS, code=CODE, redirect_uri=REDIRECT, pkce_verifier=VERIFIER
        )
    err = info.value
    assert err.code == "provider_error"
    assert err.status == 502
    assert err.details == {"status": status, "provider_error": body["error"]}
    assert body["error"] in str(err)
    if "error_description" in body:
        assert body["error_description"] in str(err)
    assert_no_secrets(err)


def test_oversized_provider_error_is_truncated(mock: respx.MockRouter, http: httpx.Client) -> None:
    mock.post(TOKEN_URL).respond(400, json={"error": "e" * 5000, "error_description": "d" * 5000})
    with pytest.raises(ProviderError) as info:
        exchange_code(
            http, settings(), CREDS, code=CODE, redirect_uri=REDIRECT, pkce_verifier=VERIFIER
        )
    assert len(info.value.details["provider_error"]) == 100
    assert len(str(info.value)) < 400


@pytest.mark.parametrize(
    ("status", "content", "content_type"),
    [
        (500, b"<html><body>Internal Server Error</body></html>", "text/html"),
        (502, b"", "text/plain"),
        (503, b"[1, 2, 3]", "application/json"),
    ],
)
def test_non_json_http_error_becomes_provider_error(
    mock: respx.MockRouter, http: httpx.Client, status: int, content: bytes, content_type: str
) -> None:
    mock.post(TOKEN_URL).respond(status, content=content, headers={"Content-Type": content_type})
    with pytest.raises(ProviderError) as info:
        exchange_code(
            http, settings(), CREDS, code=CODE, redirect_uri=REDIRECT, pkce_verifier=VERIFIER
        )
    assert f"http_{status}" in str(info.value)
    assert info.value.details == {"status": status, "provider_error": f"http_{status}"}
    assert "<html>" not in str(info.value)
    assert_no_secrets(info.value)


def test_timeout_becomes_provider_error(mock: respx.MockRouter, http: httpx.Client) -> None:
    mock.post(TOKEN_URL).mock(side_effect=httpx.ReadTimeout)
    with pytest.raises(ProviderError) as info:
        exchange_code(
            http, settings(), CREDS, code=CODE, redirect_uri=REDIRECT, pkce_verifier=VERIFIER
        )
    assert "timed out" in str(info.value)
    assert info.value.details == {"endpoint": TOKEN_URL}
    assert_no_secrets(info.value)


def test_connection_failure_becomes_provider_error(
    mock: respx.MockRouter, http: httpx.Client
) -> None:
    mock.post(TOKEN_URL).mock(side_effect=httpx.ConnectError)
    with pytest.raises(ProviderError) as info:
        exchange_code(
            http, settings(), CREDS, code=CODE, redirect_uri=REDIRECT, pkce_verifier=VERIFIER
        )
    assert "could not be reached (ConnectError)" in str(info.value)
    assert_no_secrets(info.value)


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"token_type": "Bearer"}, "without an access_token"),
        ({"access_token": ""}, "without an access_token"),
        ({"access_token": 12345}, "without an access_token"),
        ({}, "without an access_token"),
        ({"access_token": ACCESS, "token_type": "mac"}, "unsupported token_type"),
        ({"access_token": ACCESS, "expires_in": "soon"}, "non-numeric expires_in"),
    ],
)
def test_unusable_success_response(
    mock: respx.MockRouter, http: httpx.Client, body: dict[str, Any], fragment: str
) -> None:
    mock.post(TOKEN_URL).respond(200, json=body)
    with pytest.raises(ProviderError) as info:
        exchange_code(
            http, settings(), CREDS, code=CODE, redirect_uri=REDIRECT, pkce_verifier=VERIFIER
        )
    assert fragment in str(info.value)
    assert_no_secrets(info.value)


def test_html_success_response_has_no_access_token(
    mock: respx.MockRouter, http: httpx.Client
) -> None:
    mock.post(TOKEN_URL).respond(200, html="<html>login</html>")
    with pytest.raises(ProviderError, match="without an access_token"):
        exchange_code(
            http, settings(), CREDS, code=CODE, redirect_uri=REDIRECT, pkce_verifier=VERIFIER
        )


# --- TokenSet.from_response ---------------------------------------------------------


def test_expires_in_becomes_expires_at() -> None:
    now = datetime(2024, 1, 1, 12, 0, tzinfo=UTC)
    tokens = TokenSet.from_response({"access_token": "a", "expires_in": 3600}, now=now)
    assert tokens.expires_at == datetime(2024, 1, 1, 13, 0, tzinfo=UTC)
    tokens = TokenSet.from_response({"access_token": "a", "expires_in": "120"}, now=now)
    assert tokens.expires_at == now + timedelta(seconds=120)


def test_no_expires_in_means_no_expiry() -> None:
    tokens = TokenSet.from_response({"access_token": "a"})
    assert tokens.expires_at is None
    assert tokens.refresh_token is None
    assert tokens.token_type == "Bearer"


def test_token_type_is_normalised_and_scope_list_joined() -> None:
    tokens = TokenSet.from_response(
        {"access_token": "a", "token_type": "bearer", "scope": ["a", "b"], "refresh_token": ""}
    )
    assert tokens.token_type == "Bearer"
    assert tokens.scope == "a b"
    assert tokens.refresh_token is None, "an empty refresh_token is no refresh token"


# --- refresh_tokens -----------------------------------------------------------------


def test_refresh_sends_the_refresh_token_and_rotates(
    mock: respx.MockRouter, http: httpx.Client
) -> None:
    route = mock.post(TOKEN_URL).respond(
        200, json={"access_token": ACCESS, "refresh_token": NEW_REFRESH, "expires_in": 60}
    )
    tokens = refresh_tokens(http, settings(), CREDS, refresh_token=REFRESH)
    request = route.calls.last.request
    assert request.headers["Authorization"] == BASIC
    assert form(request) == {"grant_type": "refresh_token", "refresh_token": REFRESH}
    assert tokens.access_token == ACCESS
    assert tokens.refresh_token == NEW_REFRESH
    assert tokens.expires_at is not None


def test_refresh_without_new_refresh_token_keeps_the_old_one(
    mock: respx.MockRouter, http: httpx.Client
) -> None:
    mock.post(TOKEN_URL).respond(
        200, json={"access_token": ACCESS, "expires_in": 60, "scope": "profile"}
    )
    tokens = refresh_tokens(http, settings(), CREDS, refresh_token=REFRESH)
    assert tokens.access_token == ACCESS
    assert tokens.refresh_token == REFRESH
    assert tokens.scope == "profile"
    assert tokens.expires_at is not None


def test_refresh_with_client_secret_post(mock: respx.MockRouter, http: httpx.Client) -> None:
    route = mock.post(TOKEN_URL).respond(200, json={"access_token": ACCESS})
    refresh_tokens(
        http,
        settings(token_endpoint_auth_method="client_secret_post"),
        CREDS,
        refresh_token=REFRESH,
    )
    request = route.calls.last.request
    assert "Authorization" not in request.headers
    assert form(request) == {
        "grant_type": "refresh_token",
        "refresh_token": REFRESH,
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
    }


def test_refresh_refused(mock: respx.MockRouter, http: httpx.Client) -> None:
    mock.post(TOKEN_URL).respond(400, json={"error": "invalid_grant"})
    with pytest.raises(ProviderError) as info:
        refresh_tokens(http, settings(), CREDS, refresh_token=REFRESH)
    assert "token refresh refused: invalid_grant" in str(info.value)
    assert info.value.details["provider_error"] == "invalid_grant"
    assert_no_secrets(info.value)


def test_refresh_timeout(mock: respx.MockRouter, http: httpx.Client) -> None:
    mock.post(TOKEN_URL).mock(side_effect=httpx.ReadTimeout)
    with pytest.raises(ProviderError, match="timed out"):
        refresh_tokens(http, settings(), CREDS, refresh_token=REFRESH)


# --- revoke_token -------------------------------------------------------------------


@pytest.mark.parametrize("hint", ["refresh_token", "access_token"])
def test_revoke_sends_token_and_hint(mock: respx.MockRouter, http: httpx.Client, hint: str) -> None:
    route = mock.post(REVOKE_URL).respond(200)
    assert revoke_token(http, settings(), CREDS, token=REFRESH, token_type_hint=hint) is None
    request = route.calls.last.request
    assert request.headers["Authorization"] == BASIC
    assert form(request) == {"token": REFRESH, "token_type_hint": hint}


def test_revoke_with_client_secret_post(mock: respx.MockRouter, http: httpx.Client) -> None:
    route = mock.post(REVOKE_URL).respond(200)
    revoke_token(
        http,
        settings(token_endpoint_auth_method="client_secret_post"),
        CREDS,
        token=ACCESS,
        token_type_hint="access_token",
    )
    request = route.calls.last.request
    assert "Authorization" not in request.headers
    assert form(request) == {
        "token": ACCESS,
        "token_type_hint": "access_token",
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
    }


@pytest.mark.parametrize("status", [400, 401, 500, 503])
def test_revoke_refused(mock: respx.MockRouter, http: httpx.Client, status: int) -> None:
    mock.post(REVOKE_URL).respond(status, json={"error": "unsupported_token_type"})
    with pytest.raises(ProviderError) as info:
        revoke_token(http, settings(), CREDS, token=REFRESH, token_type_hint="refresh_token")
    assert f"HTTP {status}" in str(info.value)
    assert info.value.details == {"status": status, "provider_error": "unsupported_token_type"}
    assert_no_secrets(info.value)


def test_revoke_refused_names_the_provider_error_or_the_status(
    mock: respx.MockRouter, http: httpx.Client
) -> None:
    mock.post(REVOKE_URL).respond(503, text="<html>down</html>")
    with pytest.raises(ProviderError) as info:
        revoke_token(http, settings(), CREDS, token=REFRESH, token_type_hint="refresh_token")
    assert info.value.details == {"status": 503, "provider_error": "http_503"}


def test_declared_token_type_is_accepted_and_used_as_bearer() -> None:
    body = {"ok": True, "access_token": "xoxb-1", "token_type": "bot", "scope": "chat:write"}
    with pytest.raises(ProviderError, match="unsupported token_type 'bot'"):
        TokenSet.from_response(body)
    tokens = TokenSet.from_response(body, token_type="bot")
    assert tokens.token_type == "Bearer"
    assert tokens.access_token == "xoxb-1"


def test_revoke_timeout(mock: respx.MockRouter, http: httpx.Client) -> None:
    mock.post(REVOKE_URL).mock(side_effect=httpx.ReadTimeout)
    with pytest.raises(ProviderError) as info:
        revoke_token(http, settings(), CREDS, token=REFRESH, token_type_hint="refresh_token")
    assert "timed out" in str(info.value)
    assert info.value.details == {"endpoint": REVOKE_URL}
    assert_no_secrets(info.value)


def test_revoke_without_endpoint_makes_no_request(
    mock: respx.MockRouter, http: httpx.Client
) -> None:
    route = mock.route().respond(200)
    with pytest.raises(ProviderError, match="no revocation endpoint"):
        revoke_token(
            http, settings(revoke_url=None), CREDS, token=REFRESH, token_type_hint="refresh_token"
        )
    assert route.call_count == 0


# --- nothing leaks through repr -----------------------------------------------------


def test_reprs_never_contain_secrets() -> None:
    tokens = TokenSet(
        access_token=ACCESS,
        refresh_token=REFRESH,
        expires_at=datetime(2024, 1, 1, tzinfo=UTC),
        scope="profile",
    )
    pkce = Pkce(verifier=VERIFIER, challenge="challenge")
    for obj, secrets in (
        (tokens, (ACCESS, REFRESH)),
        (CREDS, (CLIENT_SECRET,)),
        (pkce, (VERIFIER,)),
    ):
        for text in (repr(obj), str(obj), f"{obj}", repr([obj]), repr({"k": obj})):
            for secret in secrets:
                assert secret not in text
    assert "profile" in repr(tokens)
    assert CLIENT_ID in repr(CREDS)
    assert "<redacted>" in repr(tokens)
    assert "refresh_token=None" in repr(TokenSet(access_token=ACCESS))
