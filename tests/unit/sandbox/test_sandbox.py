"""The sandbox third party: a real OAuth 2 provider (authlib) and a recording API."""

from __future__ import annotations

import base64
import hashlib
import logging
import re
import secrets
import threading
import time
import warnings
from collections.abc import Iterator
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from fastapi import FastAPI

import broker.sandbox
from broker.sandbox import SandboxClient, SandboxProvider, create_sandbox_app

with warnings.catch_warnings():
    # starlette 1.x warns at import that it would rather use the httpx2 package.
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

CLIENT_ID = "demo-client"
CLIENT_SECRET = "demo-secret"
REDIRECT_URI = "http://127.0.0.1:9000/oauth/callback"
STATE = "state-123"


def pkce_pair() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


@pytest.fixture
def provider() -> SandboxProvider:
    return SandboxProvider(clients=[SandboxClient(CLIENT_ID, CLIENT_SECRET, [REDIRECT_URI])])


@pytest.fixture
def client(provider: SandboxProvider) -> Iterator[TestClient]:
    # A loopback host: authlib accepts plain http there and nowhere else.
    app = create_sandbox_app(provider)
    # The client is on loopback too: /api/received answers nobody else.
    with TestClient(
        app, base_url="http://localhost", follow_redirects=False, client=("127.0.0.1", 50000)
    ) as test_client:
        yield test_client


def authorize_params(challenge: str, **overrides: str | None) -> dict[str, str]:
    params: dict[str, str | None] = {
        "response_type": "code",
        "client_id": CLIENT_ID,
        "redirect_uri": REDIRECT_URI,
        "scope": "messages:write profile",
        "state": STATE,
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        **overrides,
    }
    return {key: value for key, value in params.items() if value is not None}


def redirect_params(response: httpx.Response) -> dict[str, str]:
    assert response.status_code == 302, response.text
    location = urlsplit(response.headers["location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == REDIRECT_URI
    return {key: values[0] for key, values in parse_qs(location.query).items()}


def obtain_code(client: TestClient, challenge: str, prefix: str = "") -> str:
    form = {**authorize_params(challenge), "confirm": "yes"}
    params = redirect_params(client.post(f"{prefix}/oauth/authorize", data=form))
    assert params["state"] == STATE
    return params["code"]


def exchange(
    client: TestClient, code: str, verifier: str | None, *, prefix: str = "", post: bool = False
) -> httpx.Response:
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT_URI}
    if verifier is not None:
        form["code_verifier"] = verifier
    if post:
        form |= {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET}
        return client.post(f"{prefix}/oauth/token", data=form)
    return client.post(f"{prefix}/oauth/token", data=form, auth=(CLIENT_ID, CLIENT_SECRET))


def issue_tokens(client: TestClient) -> dict[str, str]:
    verifier, challenge = pkce_pair()
    response = exchange(client, obtain_code(client, challenge), verifier)
    assert response.status_code == 200, response.text
    return response.json()


def refresh(client: TestClient, refresh_token: str) -> httpx.Response:
    form = {"grant_type": "refresh_token", "refresh_token": refresh_token}
    return client.post("/oauth/token", data=form, auth=(CLIENT_ID, CLIENT_SECRET))


def revoke(client: TestClient, token: str, hint: str | None = None) -> httpx.Response:
    form = {"token": token} | ({"token_type_hint": hint} if hint else {})
    return client.post("/oauth/revoke", data=form, auth=(CLIENT_ID, CLIENT_SECRET))


def post_message(client: TestClient, access_token: str, text: str = "hi") -> httpx.Response:
    headers = {"Authorization": f"Bearer {access_token}"}
    return client.post("/api/post_message", json={"text": text}, headers=headers)


def form_action(html: str) -> str:
    match = re.search(r'<form method="post" action="([^"]*)"', html)
    assert match, html
    return match.group(1)


def test_public_api() -> None:
    assert broker.sandbox.__all__ == [
        "ReceivedRequest",
        "SandboxClient",
        "SandboxProvider",
        "create_sandbox_app",
    ]
    assert SandboxClient("a", "b", []).scopes == ["messages:write", "profile"]


# -- authorization endpoint ---------------------------------------------------------


def test_authorize_page_shows_user_client_and_scopes(client: TestClient) -> None:
    _, challenge = pkce_pair()
    response = client.get("/oauth/authorize", params=authorize_params(challenge))

    assert response.status_code == 200
    page = response.text
    assert "Sandbox Co." in page
    assert "sandbox-user" in page
    assert CLIENT_ID in page
    assert 'data-scope="messages:write"' in page
    assert 'data-scope="profile"' in page
    assert "Approve" in page and "Deny" in page
    assert form_action(page) == "/oauth/authorize"
    assert f'name="state" value="{STATE}"' in page
    assert f'name="code_challenge" value="{challenge}"' in page


def test_code_flow_with_pkce_issues_tokens(client: TestClient, provider: SandboxProvider) -> None:
    verifier, challenge = pkce_pair()
    response = exchange(client, obtain_code(client, challenge), verifier)

    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 3600
    assert body["scope"] == "messages:write profile"
    assert body["access_token"] != body["refresh_token"]
    assert provider.is_active(body["access_token"])
    assert provider.is_active(body["refresh_token"])
    assert provider.token_requests == ["authorization_code"]


def test_client_secret_post_is_accepted(client: TestClient) -> None:
    verifier, challenge = pkce_pair()
    response = exchange(client, obtain_code(client, challenge), verifier, post=True)
    assert response.status_code == 200
    assert response.json()["token_type"] == "Bearer"


def test_wrong_client_secret_is_invalid_client(client: TestClient) -> None:
    verifier, challenge = pkce_pair()
    form = {
        "grant_type": "authorization_code",
        "code": obtain_code(client, challenge),
        "redirect_uri": REDIRECT_URI,
        "code_verifier": verifier,
    }
    response = client.post("/oauth/token", data=form, auth=(CLIENT_ID, "wrong"))
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"


def test_wrong_verifier_is_invalid_grant(client: TestClient) -> None:
    _, challenge = pkce_pair()
    other_verifier, _ = pkce_pair()
    response = exchange(client, obtain_code(client, challenge), other_verifier)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_grant"


def test_missing_verifier_is_refused(client: TestClient) -> None:
    _, challenge = pkce_pair()
    response = exchange(client, obtain_code(client, challenge), None)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"


def test_code_is_single_use_and_replay_revokes_its_tokens(
    client: TestClient, provider: SandboxProvider
) -> None:
    verifier, challenge = pkce_pair()
    code = obtain_code(client, challenge)
    tokens = exchange(client, code, verifier).json()

    replay = exchange(client, code, verifier)

    assert replay.status_code == 400
    assert replay.json()["error"] == "invalid_grant"
    assert not provider.is_active(tokens["access_token"])
    assert not provider.is_active(tokens["refresh_token"])


@pytest.mark.parametrize(
    "overrides",
    [
        {"code_challenge": None, "code_challenge_method": None},
        {"code_challenge_method": "plain"},
        {"code_challenge_method": None},
    ],
    ids=["no-pkce", "plain", "method-missing"],
)
def test_authorization_without_s256_pkce_is_refused(
    client: TestClient, overrides: dict[str, str | None]
) -> None:
    _, challenge = pkce_pair()
    params = authorize_params(challenge, **overrides)

    page = client.get("/oauth/authorize", params=params)
    decision = client.post("/oauth/authorize", data={**params, "confirm": "yes"})

    for response in (page, decision):
        error = redirect_params(response)
        assert error["error"] == "invalid_request"
        assert error["state"] == STATE
        assert "code" not in error


def test_deny_redirects_with_access_denied_and_state(client: TestClient) -> None:
    _, challenge = pkce_pair()
    form = {**authorize_params(challenge), "confirm": "no"}
    params = redirect_params(client.post("/oauth/authorize", data=form))
    assert params["error"] == "access_denied"
    assert params["state"] == STATE
    assert "code" not in params


@pytest.mark.parametrize(
    "overrides",
    [
        {"redirect_uri": "http://127.0.0.1:9000/elsewhere"},
        {"redirect_uri": REDIRECT_URI + "?x=1"},
        {"redirect_uri": None},
        {"client_id": "unknown-client"},
        {"client_id": None},
    ],
    ids=["other-uri", "uri-with-query", "no-uri", "unknown-client", "no-client"],
)
def test_bad_client_or_redirect_uri_gets_error_page_not_redirect(
    client: TestClient, overrides: dict[str, str | None]
) -> None:
    _, challenge = pkce_pair()
    params = authorize_params(challenge, **overrides)

    for response in (
        client.get("/oauth/authorize", params=params),
        client.post("/oauth/authorize", data={**params, "confirm": "yes"}),
    ):
        assert response.status_code == 400
        assert "location" not in response.headers
        assert "text/html" in response.headers["content-type"]
        assert "have not been sent back" in response.text


def test_scope_beyond_the_clients_is_invalid_scope(client: TestClient) -> None:
    _, challenge = pkce_pair()
    params = authorize_params(challenge, scope="messages:write admin")
    error = redirect_params(client.get("/oauth/authorize", params=params))
    assert error["error"] == "invalid_scope"
    assert error["state"] == STATE


# -- refresh and revocation -----------------------------------------------------------


def test_refresh_rotates_and_old_refresh_token_is_rejected(
    client: TestClient, provider: SandboxProvider
) -> None:
    first = issue_tokens(client)

    response = refresh(client, first["refresh_token"])

    assert response.status_code == 200
    second = response.json()
    assert second["refresh_token"] != first["refresh_token"]
    assert second["access_token"] != first["access_token"]
    assert second["expires_in"] == 3600
    assert not provider.is_active(first["refresh_token"])
    assert provider.is_active(second["refresh_token"])
    reused = refresh(client, first["refresh_token"])
    assert reused.status_code == 400
    assert reused.json()["error"] == "invalid_grant"
    third = client.post(
        "/oauth/token",
        data={
            "grant_type": "refresh_token",
            "refresh_token": second["refresh_token"],
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
        },
    )
    assert third.status_code == 200
    assert provider.token_requests == [
        "authorization_code",
        "refresh_token",
        "refresh_token",
        "refresh_token",
    ]


def test_concurrent_refreshes_with_one_token_have_one_winner(
    client: TestClient, provider: SandboxProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    tokens = issue_tokens(client)
    statuses: list[int] = []
    lookup = provider.find_active_refresh_token

    def slow_lookup(token: str) -> object:
        found = lookup(token)
        time.sleep(0.05)  # widen the check-then-rotate window
        return found

    monkeypatch.setattr(provider, "find_active_refresh_token", slow_lookup)

    def attempt() -> None:
        statuses.append(refresh(client, tokens["refresh_token"]).status_code)

    threads = [threading.Thread(target=attempt) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(statuses) == [200, 400, 400, 400]


def test_revoking_refresh_token_kills_its_access_tokens(
    client: TestClient, provider: SandboxProvider
) -> None:
    first = issue_tokens(client)
    second = refresh(client, first["refresh_token"]).json()

    response = revoke(client, second["refresh_token"], "refresh_token")

    assert response.status_code == 200
    assert provider.revoked == ["refresh_token"]
    for token in (first["access_token"], second["access_token"], second["refresh_token"]):
        assert not provider.is_active(token)
    assert post_message(client, second["access_token"]).status_code == 401
    assert refresh(client, second["refresh_token"]).json()["error"] == "invalid_grant"


def test_revoking_access_token_leaves_refresh_token(
    client: TestClient, provider: SandboxProvider
) -> None:
    tokens = issue_tokens(client)

    response = revoke(client, tokens["access_token"])  # no hint

    assert response.status_code == 200
    assert provider.revoked == ["access_token"]
    assert not provider.is_active(tokens["access_token"])
    assert provider.is_active(tokens["refresh_token"])
    unauthorized = post_message(client, tokens["access_token"])
    assert unauthorized.status_code == 401
    assert 'error="invalid_token"' in unauthorized.headers["www-authenticate"]


def test_revoking_unknown_or_already_revoked_token_is_quietly_ok(
    client: TestClient, provider: SandboxProvider
) -> None:
    tokens = issue_tokens(client)
    assert revoke(client, tokens["refresh_token"], "refresh_token").status_code == 200

    assert revoke(client, tokens["refresh_token"], "refresh_token").status_code == 200
    assert revoke(client, "no-such-token").status_code == 200
    assert provider.revoked == ["refresh_token"]


def test_revocation_requires_client_authentication(client: TestClient) -> None:
    tokens = issue_tokens(client)
    response = client.post("/oauth/revoke", data={"token": tokens["access_token"]})
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"


# -- API ------------------------------------------------------------------------------


def test_api_stores_request_with_authorization_redacted(
    client: TestClient, provider: SandboxProvider
) -> None:
    tokens = issue_tokens(client)

    response = post_message(client, tokens["access_token"], "hello")

    assert response.status_code == 201
    body = response.json()
    assert body["ok"] is True
    [item] = provider.received
    assert item.id == body["id"]
    assert item.action == "post_message"
    assert item.method == "POST"
    assert item.path == "/api/post_message"
    assert item.body == {"text": "hello"}
    assert item.headers["authorization"] == "REDACTED"
    assert item.headers["content-type"] == "application/json"
    assert tokens["access_token"] not in repr(item)
    listed = client.get("/api/received").json()
    assert [entry["id"] for entry in listed] == [body["id"]]
    assert listed[0]["body"] == {"text": "hello"}
    assert listed[0]["headers"]["authorization"] == "REDACTED"
    raw = response.request.content
    assert listed[0]["sha256"] == hashlib.sha256(raw).hexdigest()
    assert listed[0]["size"] == len(raw)


def test_api_keeps_a_non_json_body_as_none(client: TestClient, provider: SandboxProvider) -> None:
    tokens = issue_tokens(client)
    headers = {"Authorization": f"Bearer {tokens['access_token']}"}
    response = client.post("/api/ping", content=b"not json", headers=headers)
    assert response.status_code == 201
    assert provider.received[0].body is None
    assert provider.received[0].size == 8


@pytest.mark.parametrize(
    ("authorization", "challenge"),
    [
        (None, 'Bearer realm="sandbox"'),
        ("Bearer no-such-token", 'Bearer error="invalid_token"'),
        ("Basic Zm9vOmJhcg==", 'Bearer realm="sandbox"'),
    ],
    ids=["missing", "unknown-token", "wrong-scheme"],
)
def test_api_requires_a_valid_bearer_token(
    client: TestClient, provider: SandboxProvider, authorization: str | None, challenge: str
) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    response = client.post("/api/post_message", json={"text": "x"}, headers=headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith(challenge)
    assert provider.received == []


# -- fault injection --------------------------------------------------------------------


def test_fail_api_answers_429_with_retry_after_then_recovers(
    client: TestClient, provider: SandboxProvider
) -> None:
    tokens = issue_tokens(client)
    provider.fail_api(429, count=2, headers={"Retry-After": "1"})

    first = post_message(client, tokens["access_token"])
    second = post_message(client, tokens["access_token"])
    third = post_message(client, tokens["access_token"])

    for failed in (first, second):
        assert failed.status_code == 429
        assert failed.headers["retry-after"] == "1"
        assert failed.json() == {"error": "rate_limited"}
    assert third.status_code == 201
    assert [item.id for item in provider.received] == [third.json()["id"]]


def test_fail_api_503_with_custom_body(client: TestClient, provider: SandboxProvider) -> None:
    tokens = issue_tokens(client)
    provider.fail_api(503, body={"error": "maintenance"})
    response = post_message(client, tokens["access_token"])
    assert response.status_code == 503
    assert response.json() == {"error": "maintenance"}


def test_fail_token_endpoint_answers_500_and_is_recorded(
    client: TestClient, provider: SandboxProvider
) -> None:
    verifier, challenge = pkce_pair()
    code = obtain_code(client, challenge)
    provider.fail_token_endpoint(500)

    failed = exchange(client, code, verifier)
    retried = exchange(client, code, verifier)

    assert failed.status_code == 500
    assert failed.json() == {"error": "server_error"}
    assert retried.status_code == 200  # the failed attempt did not consume the code
    assert provider.token_requests == ["authorization_code", "authorization_code"]


def test_fail_token_endpoint_with_custom_body(
    client: TestClient, provider: SandboxProvider
) -> None:
    tokens = issue_tokens(client)
    provider.fail_token_endpoint(400, body={"error": "invalid_grant"})
    response = refresh(client, tokens["refresh_token"])
    assert response.status_code == 400
    assert response.json() == {"error": "invalid_grant"}
    assert provider.is_active(tokens["refresh_token"])


def test_expire_access_tokens_makes_api_answer_401_until_refresh(
    client: TestClient, provider: SandboxProvider
) -> None:
    tokens = issue_tokens(client)
    provider.expire_access_tokens()

    response = post_message(client, tokens["access_token"])

    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith('Bearer error="invalid_token"')
    assert not provider.is_active(tokens["access_token"])
    assert provider.is_active(tokens["refresh_token"])
    renewed = refresh(client, tokens["refresh_token"]).json()
    assert post_message(client, renewed["access_token"]).status_code == 201


def test_fail_revocation_leaves_token_active(client: TestClient, provider: SandboxProvider) -> None:
    tokens = issue_tokens(client)
    provider.fail_revocation(503)

    failed = revoke(client, tokens["refresh_token"], "refresh_token")

    assert failed.status_code == 503
    assert provider.is_active(tokens["refresh_token"])
    assert provider.revoked == []
    assert revoke(client, tokens["refresh_token"], "refresh_token").status_code == 200
    assert not provider.is_active(tokens["refresh_token"])


def test_fault_count_must_be_positive(provider: SandboxProvider) -> None:
    with pytest.raises(ValueError, match="count"):
        provider.fail_api(503, count=0)


# -- mounting, transport, logging -------------------------------------------------------


def test_mounted_under_sandbox_links_and_flow_stay_under_the_mount(
    provider: SandboxProvider,
) -> None:
    parent = FastAPI()
    parent.mount("/sandbox", create_sandbox_app(provider), name="sandbox")
    with TestClient(
        parent,
        base_url="http://127.0.0.1:8000",
        follow_redirects=False,
        client=("127.0.0.1", 50000),
    ) as client:
        verifier, challenge = pkce_pair()
        page = client.get("/sandbox/oauth/authorize", params=authorize_params(challenge))
        assert page.status_code == 200
        action = form_action(page.text)
        assert action == "/sandbox/oauth/authorize"

        form = {**authorize_params(challenge), "confirm": "yes"}
        code = redirect_params(client.post(action, data=form))["code"]
        tokens = exchange(client, code, verifier, prefix="/sandbox").json()
        headers = {"Authorization": f"Bearer {tokens['access_token']}"}
        sent = client.post("/sandbox/api/post_message", json={"a": 1}, headers=headers)
        assert sent.status_code == 201
        assert provider.received[0].path == "/sandbox/api/post_message"
        assert client.get("/sandbox/api/received").json()[0]["body"] == {"a": 1}


def test_plain_http_off_loopback_is_refused_as_insecure_transport(
    provider: SandboxProvider,
) -> None:
    verifier, challenge = pkce_pair()
    app = create_sandbox_app(provider)
    with TestClient(app, base_url="https://sandbox.example", follow_redirects=False) as secure:
        code = obtain_code(secure, challenge)  # https is fine on any host
    with TestClient(app, base_url="http://sandbox.example", follow_redirects=False) as plain:
        page = plain.get("/oauth/authorize", params=authorize_params(challenge))
        assert page.status_code == 400
        assert "insecure_transport" in page.text
        token = exchange(plain, code, verifier)
        assert token.status_code == 400
        assert token.json()["error"] == "insecure_transport"
        assert revoke(plain, "anything").json()["error"] == "insecure_transport"


def test_tokens_never_reach_the_logs(client: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG):
        tokens = issue_tokens(client)
        rotated = refresh(client, tokens["refresh_token"]).json()
    text = caplog.text
    for token in (*tokens.values(), *rotated.values()):
        if len(str(token)) > 20:
            assert str(token) not in text
