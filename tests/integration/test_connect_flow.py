"""The connect flow end to end: real sockets, a real OAuth provider on loopback."""

from __future__ import annotations

from sqlmodel import Session, select

from broker.store.models import Connection, ConnectionToken, ConsentRecord
from tests.integration.conftest import RETURN_URL, Browser, Stack, connect, query

WORK_ITEMS = "user.content.work_items"
NAME = "user.name"
EMAIL = "user.contact.email"


def test_consent_page_shows_data_policies_and_version(stack: Stack, browser: Browser) -> None:
    session = stack.connect_session()
    page, fields = browser.open_consent(session["url"])
    assert page.status_code == 200
    manifest = stack.rt.registry.get("sandbox").manifest
    text = page.text
    assert manifest.privacy_policy_url in text
    assert manifest.terms_url in text
    for decl in manifest.data:
        assert decl.category in text
        assert decl.purpose in text
    assert "Platform privacy policy version 1" in text
    # policy links come before the approve button
    assert text.index(manifest.privacy_policy_url) < text.index('value="approve"')
    # optional categories are checkboxes, the required one is not
    assert f'name="categories" value="{NAME}"' in text
    assert f'name="categories" value="{EMAIL}"' in text
    assert f'name="categories" value="{WORK_ITEMS}"' not in text
    # optional data is opt-in: no box is ticked for the user
    assert "checked" not in text
    # users read fields in words, not as catalog patterns
    assert "email (in any object)" in text and "**." not in text
    assert page.headers["x-frame-options"] == "DENY"
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    assert page.headers["referrer-policy"] == "no-referrer"
    assert set(fields) == {"session", "csrf"}


def test_connect_with_declined_optional_category(stack: Stack, browser: Browser) -> None:
    connection_id = connect(stack, browser, optional=[NAME])
    with stack.api() as api:
        conn = api.get(f"/v1/connections/{connection_id}").json()
        consents = api.get(f"/v1/connections/{connection_id}/consents").json()["consents"]
        listed = api.get("/v1/users/user-1/connections").json()["connections"]
    assert conn["status"] == "active"
    assert conn["granted_categories"] == [WORK_ITEMS, NAME]
    assert conn["declined_categories"] == [EMAIL]
    assert [c["id"] for c in listed] == [connection_id]
    (consent,) = consents
    manifest = stack.rt.registry.get("sandbox").manifest
    assert consent["granted_categories"] == [WORK_ITEMS, NAME]
    assert consent["declined_categories"] == [EMAIL]
    assert consent["privacy_policy_url"] == manifest.privacy_policy_url
    assert consent["terms_url"] == manifest.terms_url
    assert consent["platform_policy_version"] == "1"
    assert consent["purposes"][EMAIL] == manifest.declaration(EMAIL).purpose
    assert consent["manifest_digest"] == manifest.digest()
    assert consent["client_ip"] == "127.0.0.1"
    assert consent["user_agent"].startswith("python-httpx")

    with Session(stack.rt.engine) as db:
        row = db.get(ConnectionToken, connection_id)
    assert row is not None and row.refresh_token is not None
    access = stack.rt.vault.open(row.access_token, connection_id=connection_id, kind="access_token")
    refresh = stack.rt.vault.open(
        row.refresh_token, connection_id=connection_id, kind="refresh_token"
    )
    assert stack.provider.is_active(access)
    assert access not in row.access_token and refresh not in row.refresh_token
    assert row.key_id == stack.rt.vault.ring.active
    # the API never shows a token
    with stack.api() as api:
        for path in (f"/v1/connections/{connection_id}", "/v1/users/user-1/connections"):
            body = api.get(path).text
            assert access not in body and refresh not in body
    # the PKCE exchange really happened
    assert stack.provider.token_requests == ["authorization_code"]


def _no_usable_connection(stack: Stack, user_id: str = "user-1") -> list[Connection]:
    with Session(stack.rt.engine) as db:
        conns = db.exec(select(Connection).where(Connection.user_id == user_id)).all()
        assert db.exec(select(ConnectionToken)).all() == []
        assert db.exec(select(ConsentRecord)).all() == []
    assert all(c.status != "active" for c in conns)
    return list(conns)


def test_provider_access_denied(stack: Stack, browser: Browser) -> None:
    session = stack.connect_session()
    to_provider = browser.approve(session["url"], optional=[])
    back = browser.provider_decides(to_provider.headers["location"], allow=False)
    assert query(back.headers["location"])["error"] == "access_denied"
    done = browser.get(back.headers["location"])
    assert done.status_code == 303
    assert done.headers["location"].startswith(RETURN_URL)
    assert query(done.headers["location"])["status"] == "error"
    (conn,) = _no_usable_connection(stack)
    assert conn.status == "pending"
    assert "access_denied" in (conn.last_error or "")


def test_token_endpoint_failure_leaves_nothing(stack: Stack, browser: Browser) -> None:
    stack.provider.fail_token_endpoint(500)
    session = stack.connect_session()
    to_provider = browser.approve(session["url"], optional=[NAME])
    back = browser.provider_decides(to_provider.headers["location"], allow=True)
    done = browser.get(back.headers["location"])
    assert query(done.headers["location"])["status"] == "error"
    (conn,) = _no_usable_connection(stack)
    assert conn.status == "pending"
    assert "500" in (conn.last_error or "") or "server_error" in (conn.last_error or "")


def test_callback_without_return_url_shows_clear_page(stack: Stack, browser: Browser) -> None:
    with stack.api() as api:
        session = api.post(
            "/v1/connect-sessions", json={"user_id": "user-2", "connector": "sandbox"}
        ).json()
    to_provider = browser.approve(session["url"], optional=[])
    back = browser.provider_decides(to_provider.headers["location"], allow=False)
    done = browser.get(back.headers["location"])
    assert done.status_code == 400
    assert "did not allow access" in done.text
    assert "Traceback" not in done.text


def test_session_is_single_use(stack: Stack, browser: Browser) -> None:
    session = stack.connect_session()
    first = browser.approve(session["url"], optional=[])
    assert first.status_code == 303
    again = browser.get(session["url"])
    assert again.status_code == 400
    assert "already been used" in again.text
    # submitting the old form again is refused too, and creates nothing
    second = browser.post(
        f"{stack.url}/connect/sandbox",
        data={"session": session["token"], "csrf": "x", "decision": "approve"},
    )
    assert second.status_code == 400
    with Session(stack.rt.engine) as db:
        assert len(db.exec(select(Connection)).all()) == 1


def test_expired_session(stack: Stack, browser: Browser) -> None:
    session = stack.connect_session()
    real_clock = stack.rt.clock
    stack.rt.clock = lambda: real_clock() + __import__("datetime").timedelta(hours=1)
    page = browser.get(session["url"])
    assert page.status_code == 400
    assert "expired" in page.text


def test_forged_session_token(stack: Stack, browser: Browser) -> None:
    page = browser.get(f"{stack.url}/connect/sandbox?session=cs_forged")
    assert page.status_code == 400
    assert "not valid" in page.text
    missing = browser.get(f"{stack.url}/connect/sandbox")
    assert missing.status_code == 400


def test_csrf_cookie_must_match(stack: Stack, browser: Browser) -> None:
    session = stack.connect_session()
    _page, fields = browser.open_consent(session["url"])
    fields["csrf"] = "forged"
    resp = browser.post(f"{stack.url}/connect/sandbox", data={**fields, "decision": "approve"})
    assert resp.status_code == 400
    _no_usable_connection(stack)


def test_forged_and_replayed_state(stack: Stack, browser: Browser) -> None:
    forged = browser.get(f"{stack.url}/oauth/callback?state=forged&code=abc")
    assert forged.status_code == 400
    assert "unknown state" in forged.text
    session = stack.connect_session()
    to_provider = browser.approve(session["url"], optional=[])
    back = browser.provider_decides(to_provider.headers["location"], allow=True)
    callback_url = back.headers["location"]
    assert browser.get(callback_url).status_code == 303
    replay = browser.get(callback_url)
    assert replay.status_code == 400
    assert "already used" in replay.text
    with Session(stack.rt.engine) as db:
        assert len(db.exec(select(ConsentRecord)).all()) == 1
    assert stack.provider.token_requests == ["authorization_code"]


def test_unknown_connector(stack: Stack, browser: Browser) -> None:
    session = stack.connect_session()
    page = browser.get(f"{stack.url}/connect/nope?session={session['token']}")
    assert page.status_code == 404
    with stack.api() as api:
        resp = api.post("/v1/connect-sessions", json={"user_id": "u", "connector": "nope"})
    assert resp.status_code == 404
    assert resp.json()["error"]["code"] == "not_found"


def test_return_url_must_be_on_allow_list(stack: Stack) -> None:
    with stack.api() as api:
        for bad in (
            "https://evil.example.com/integrations",
            "https://app.example.com.evil.com/integrations",
            "https://app.example.com/other",
            "javascript:alert(1)",
        ):
            resp = api.post(
                "/v1/connect-sessions",
                json={"user_id": "u", "connector": "sandbox", "return_url": bad},
            )
            assert resp.status_code == 422, bad
            assert resp.json()["error"]["code"] == "return_url_not_allowed"


def test_cancel_creates_nothing(stack: Stack, browser: Browser) -> None:
    session = stack.connect_session()
    resp = browser.approve(session["url"], optional=[], decision="cancel")
    assert resp.status_code == 303
    assert query(resp.headers["location"])["status"] == "cancelled"
    with Session(stack.rt.engine) as db:
        assert db.exec(select(Connection)).all() == []
