"""Issue 9, point 1: every OAuth attempt is bound to the browser that approved it
(RFC 9700 §4.7, login CSRF), the consent page names the platform account, and
``confirm: true`` holds a new connection until the host confirms it.

Real sockets: the broker and the sandbox provider each run under uvicorn on loopback;
each "browser" is its own httpx client with its own cookie jar."""

from __future__ import annotations

import hashlib
import logging
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session, select

from broker.core.catalog import default_catalog
from broker.demo import sandbox_connector
from broker.flows.callback import NOT_THIS_BROWSER
from broker.flows.connect import create_connect_session
from broker.runtime import build_runtime
from broker.store.models import (
    AuditRow,
    Connection,
    ConnectionToken,
    ConsentRecord,
    OAuthAttempt,
)
from broker.web.app import create_app
from tests.integration.conftest import RETURN_URL, Browser, Stack, connect, form_fields, query

COOKIE = "broker_oauth"
UPDATE = {"work_item": {"id": "W-1", "title": "Ship it"}}


def _attempts(stack: Stack) -> list[OAuthAttempt]:
    with Session(stack.rt.engine) as db:
        return list(db.exec(select(OAuthAttempt)).all())


def _nothing_stored(stack: Stack) -> Connection:
    with Session(stack.rt.engine) as db:
        (conn,) = db.exec(select(Connection)).all()
        assert db.exec(select(ConnectionToken)).all() == []
        assert db.exec(select(ConsentRecord)).all() == []
        events = [r.event for r in db.exec(select(AuditRow)).all()]
    assert "consent.granted" not in events
    assert conn.status == "pending"
    return conn


def test_authorize_url_handed_to_another_browser_links_nothing(stack: Stack) -> None:
    attacker, victim = Browser(), Browser()
    try:
        session = stack.connect_session("attacker")
        to_provider = attacker.approve(session["url"], optional=[])
        assert to_provider.status_code == 303
        assert attacker.client.cookies.get(COOKIE)
        authorize_url = to_provider.headers["location"]

        # The victim follows the attacker's authorize URL (the provider remembers the
        # app, so one click suffices) and lands on the broker's callback.
        back = victim.provider_decides(authorize_url, allow=True)
        assert back.status_code in (302, 303)
        callback_url = back.headers["location"]
        done = victim.get(callback_url)
        assert done.status_code == 400
        assert "did not come back to the browser that started it" in done.text
        assert "location" not in done.headers  # a page, not a redirect to the host

        conn = _nothing_stored(stack)
        assert "login CSRF" in (conn.last_error or "")
        (attempt,) = _attempts(stack)
        assert attempt.used_at is not None  # spent
        assert attempt.code_verifier is None  # and its PKCE verifier deleted
        assert stack.provider.token_requests == []  # the victim's code was never redeemed

        # The attempt is spent: even the attacker's own browser cannot use it now.
        retry = attacker.get(callback_url)
        assert retry.status_code == 400
        assert "already used" in retry.text
        _nothing_stored(stack)
        assert stack.provider.token_requests == []
    finally:
        attacker.close()
        victim.close()


def test_same_browser_with_its_cookie_connects(stack: Stack, browser: Browser) -> None:
    connection_id = connect(stack, browser, optional=[])
    with stack.api() as api:
        assert api.get(f"/v1/connections/{connection_id}").json()["status"] == "active"
    (attempt,) = _attempts(stack)
    assert attempt.used_at is not None and attempt.code_verifier is None
    assert attempt.redirect_uri == f"{stack.url}/oauth/callback/sandbox"
    assert browser.client.cookies.get(COOKIE) is None  # cleared after the callback


def test_binding_cookie_attributes_and_digest(stack: Stack, browser: Browser) -> None:
    session = stack.connect_session()
    to_provider = browser.approve(session["url"], optional=[])
    set_cookie = [
        v for k, v in to_provider.headers.multi_items() if k == "set-cookie" and COOKIE in v
    ]
    (header,) = set_cookie
    lowered = header.lower()
    assert "httponly" in lowered and "samesite=lax" in lowered and "path=/" in lowered
    assert "secure" not in lowered  # plain http on loopback
    nonce = browser.client.cookies.get(COOKIE)
    (attempt,) = _attempts(stack)
    assert attempt.browser_hash == hashlib.sha256(nonce.encode()).hexdigest()
    assert nonce not in str(attempt.model_dump())  # only the digest is kept


def test_forged_cookie_is_refused(stack: Stack, browser: Browser) -> None:
    session = stack.connect_session()
    to_provider = browser.approve(session["url"], optional=[])
    back = browser.provider_decides(to_provider.headers["location"], allow=True)
    browser.client.cookies.set(COOKIE, "x" * 43, domain="127.0.0.1")
    done = browser.get(back.headers["location"])
    assert done.status_code == 400
    assert NOT_THIS_BROWSER in done.text
    _nothing_stored(stack)


def test_two_tabs_connect_at_once(stack: Stack, browser: Browser) -> None:
    first, second = stack.connect_session(), stack.connect_session()
    to_first = browser.approve(first["url"], optional=[])
    to_second = browser.approve(second["url"], optional=[])
    for to_provider in (to_first, to_second):
        back = browser.provider_decides(to_provider.headers["location"], allow=True)
        done = browser.get(back.headers["location"])
        assert done.status_code == 303, done.text
        assert query(done.headers["location"])["status"] == "connected"


def test_https_base_url_uses_a_host_prefixed_cookie(make_settings, monkeypatch) -> None:
    monkeypatch.setenv("BROKER_SANDBOX_CLIENT_ID", "broker-demo")
    monkeypatch.setenv("BROKER_SANDBOX_CLIENT_SECRET", "s")
    base = "https://broker.example.com"
    connector = sandbox_connector(default_catalog(), "http://127.0.0.1:9")  # never contacted
    rt = build_runtime(make_settings(base_url=base), builtins=[connector], plugins=[], upgrade=True)
    try:
        with TestClient(create_app(rt), base_url=base, follow_redirects=False) as client:
            session = create_connect_session(rt, user_id="u1", connector_id="sandbox")
            page = client.get(f"/connect/sandbox?session={session.token}")
            resp = client.post(
                "/connect/sandbox", data={**form_fields(page.text), "decision": "approve"}
            )
        assert resp.status_code == 303
        assert (
            f"redirect_uri={base}/oauth/callback/sandbox".replace(":", "%3A").replace("/", "%2F")
            in resp.headers["location"]
        )
        (header,) = [v for k, v in resp.headers.multi_items() if k == "set-cookie" and COOKIE in v]
        assert header.startswith(f"__Host-{COOKIE}=")
        lowered = header.lower()
        assert "secure" in lowered and "path=/;" in lowered + ";" and "domain" not in lowered
        assert "httponly" in lowered and "samesite=lax" in lowered
    finally:
        rt.close()


# -- the consent page names the account and the platform --------------------------------


def test_consent_page_names_platform_and_account(stack: Stack, browser: Browser) -> None:
    stack.rt.settings.platform_name = "Acme Projects"
    plain = stack.connect_session("user-42")
    page, _ = browser.open_consent(plain["url"])
    assert page.status_code == 200
    assert 'class="platform">Acme Projects<' in page.text  # in the header
    assert "to the Acme Projects account <strong>user-42</strong>" in page.text

    named = stack.connect_session("user-43", display_name="Ann Lee <ann@acme.example>")
    page, _ = browser.open_consent(named["url"])
    assert "<strong>Ann Lee &lt;ann@acme.example&gt;</strong>" in page.text


def test_header_without_platform_name(stack: Stack, browser: Browser) -> None:
    page, _ = browser.open_consent(stack.connect_session("user-42")["url"])
    assert 'class="platform"' not in page.text
    assert "to the platform account <strong>user-42</strong>" in page.text


@pytest.mark.parametrize(
    "name",
    ["", " ", "x" * 201, "Ann\nLee", "Ann\x00", "Ann\u202eeeL", "Ann\u200bLee", 7],
)
def test_display_name_is_validated(stack: Stack, name: object) -> None:
    body = {"user_id": "u1", "connector": "sandbox", "display_name": name}
    with stack.api() as api:
        resp = api.post("/v1/connect-sessions", json=body)
    assert resp.status_code == 422, resp.text
    assert resp.json()["error"]["code"] == "invalid_input"


# -- confirm: true -----------------------------------------------------------------------


def _connect_confirmed(stack: Stack, browser: Browser) -> str:
    session = stack.connect_session("user-1", confirm=True)
    to_provider = browser.approve(session["url"], optional=[])
    back = browser.provider_decides(to_provider.headers["location"], allow=True)
    done = browser.get(back.headers["location"])
    assert done.status_code == 303, done.text
    params = query(done.headers["location"])
    assert done.headers["location"].startswith(RETURN_URL)
    assert params["status"] == "pending_confirmation"
    return params["connection_id"]


def test_confirm_holds_the_connection_until_the_host_confirms(
    stack: Stack, browser: Browser
) -> None:
    connection_id = _connect_confirmed(stack, browser)
    with stack.api() as api:
        conn = api.get(f"/v1/connections/{connection_id}").json()
        assert conn["status"] == "pending_confirmation"
        assert conn["consent_id"]  # tokens stored and consent recorded already
        transfer = api.post(
            f"/v1/connections/{connection_id}/transfers",
            json={"action": "post_message", "data": UPDATE},
        )
        assert transfer.status_code == 409, transfer.text
        assert stack.provider.received == []

        auditor = api.post(
            f"/v1/connections/{connection_id}/confirm",
            headers={"Authorization": f"Bearer {stack.auditor_key}"},
        )
        assert auditor.status_code == 403

        confirmed = api.post(f"/v1/connections/{connection_id}/confirm")
        assert confirmed.status_code == 200, confirmed.text
        assert confirmed.json()["status"] == "active"
        assert confirmed.json()["activated_at"]

        again = api.post(f"/v1/connections/{connection_id}/confirm")
        assert again.status_code == 409
        assert again.json()["error"]["code"] == "conflict"
        assert "not waiting for confirmation" in again.json()["error"]["message"]

        sent = api.post(
            f"/v1/connections/{connection_id}/transfers",
            json={"action": "post_message", "data": UPDATE},
        )
        assert sent.status_code == 201, sent.text
    with Session(stack.rt.engine) as db:
        events = [
            (r.event, r.outcome)
            for r in db.exec(select(AuditRow).where(AuditRow.connection_id == connection_id))
        ]
    assert ("consent.granted", "pending_confirmation") in events
    assert events.count(("connection.confirmed", "active")) == 1


def test_unconfirmed_connection_expires(stack: Stack, browser: Browser) -> None:
    connection_id = _connect_confirmed(stack, browser)
    real_clock = stack.rt.clock
    stack.rt.clock = lambda: real_clock() + timedelta(seconds=stack.rt.settings.confirm_ttl + 1)
    with stack.api() as api:
        late = api.post(f"/v1/connections/{connection_id}/confirm")
        assert late.status_code == 409
        assert late.json()["error"]["details"]["reason"] == "confirmation_expired"
        assert api.get(f"/v1/connections/{connection_id}").json()["status"] == "revoked"
    with Session(stack.rt.engine) as db:
        assert db.get(ConnectionToken, connection_id) is None
    assert "refresh_token" in stack.provider.revoked  # revoked at the provider too


def test_confirm_unknown_connection(stack: Stack) -> None:
    with stack.api() as api:
        resp = api.post("/v1/connections/conn_nope/confirm")
    assert resp.status_code == 404


# -- connectors without credentials ------------------------------------------------------


def test_connector_without_credentials_is_not_offered(
    stack: Stack, browser: Browser, monkeypatch: pytest.MonkeyPatch, caplog
) -> None:
    with stack.api() as api:
        any_connector = api.post("/v1/connect-sessions", json={"user_id": "u1"}).json()
    listed = browser.get(any_connector["url"])
    assert "Sandbox Co." in listed.text

    session = stack.connect_session()
    monkeypatch.delenv("BROKER_SANDBOX_CLIENT_SECRET")
    listed = browser.get(any_connector["url"])
    assert listed.status_code == 200
    assert "Sandbox Co." not in listed.text
    assert "No integrations are available" in listed.text

    with caplog.at_level(logging.ERROR, logger="broker.connect"):
        page = browser.get(session["url"])
    assert page.status_code == 500
    assert "not set up on this platform yet" in page.text
    assert "BROKER_SANDBOX_CLIENT_SECRET" not in page.text
    assert "environment" not in page.text.lower()
    # the operator sees the variable in the log
    assert "BROKER_SANDBOX_CLIENT_SECRET" in caplog.text


def test_unanswered_attempts_lose_their_verifier(stack: Stack, browser: Browser) -> None:
    first = stack.connect_session()
    to_provider = browser.approve(first["url"], optional=[])
    (attempt,) = _attempts(stack)
    assert attempt.code_verifier is not None  # sealed while the attempt is open
    real_clock = stack.rt.clock
    stack.rt.clock = lambda: real_clock() + timedelta(seconds=stack.rt.settings.oauth_state_ttl)
    browser.approve(stack.connect_session()["url"], optional=[])  # any later approval sweeps
    old, new = sorted(_attempts(stack), key=lambda a: a.created_at)
    assert old.id == attempt.id and old.code_verifier is None and old.used_at is None
    assert new.code_verifier is not None
    back = browser.provider_decides(to_provider.headers["location"], allow=True)
    late = browser.get(back.headers["location"])
    assert late.status_code == 400 and "expired" in late.text
