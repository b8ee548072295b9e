"""/me: a user's own integrations, through a one-time link the host creates."""

from __future__ import annotations

import csv
import io
import re
from datetime import timedelta
from urllib.parse import urlsplit

import pytest
from sqlmodel import Session, select

from broker.store.models import AuditRow, Connection
from broker.store.subjects import lookup
from tests.integration.conftest import Browser, Stack, connect

NAME = "user.name"
UPDATE = {"work_item": {"id": "W-1", "title": "Ship it"}, "author": {"name": "Ann"}}


def user_link(stack: Stack, user_id: str = "user-1") -> dict:
    with stack.api() as api:
        resp = api.post("/v1/user-sessions", json={"user_id": user_id})
    assert resp.status_code == 201, resp.text
    return resp.json()


def sign_in(stack: Stack, browser: Browser, user_id: str = "user-1") -> None:
    resp = browser.get(user_link(stack, user_id)["url"])
    assert resp.status_code == 303, resp.text
    assert resp.headers["location"] == "/me"


def share(stack: Stack, connection_id: str, **extra: object) -> int:
    with stack.api() as api:
        body = {"action": "post_message", "data": UPDATE, **extra}
        return api.post(f"/v1/connections/{connection_id}/transfers", json=body).status_code


def csrf_of(page: str) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', page).group(1)


def test_user_session_api(stack: Stack) -> None:
    issued = user_link(stack)
    assert issued["url"] == f"{stack.url}/me?session={issued['token']}"
    assert issued["token"].startswith("cs_") and issued["expires_at"]
    with stack.api(stack.auditor_key) as api:
        assert api.post("/v1/user-sessions", json={"user_id": "u"}).status_code == 403
    with stack.api() as api:
        bad = api.post("/v1/user-sessions", json={"user_id": "not ok"})
        assert bad.status_code == 422
        assert bad.json()["error"]["code"] == "invalid_input"
        extra = api.post("/v1/user-sessions", json={"user_id": "u", "connector": "sandbox"})
        assert extra.status_code == 422
        assert "/v1/user-sessions" in api.get("/openapi.json").json()["paths"]


def test_link_sets_a_session_cookie_once_and_drops_the_token(
    stack: Stack, browser: Browser
) -> None:
    issued = user_link(stack)
    first = browser.get(issued["url"])
    assert first.status_code == 303
    assert first.headers["location"] == "/me"  # the token leaves the address bar
    assert first.headers["referrer-policy"] == "no-referrer"
    cookie = first.headers["set-cookie"]
    assert re.match(r"broker_me=[A-Za-z0-9_-]{43};", cookie)  # a random session id only
    for flag in ("HttpOnly", "Path=/me", "SameSite=lax", "Max-Age=1800"):
        assert flag in cookie, cookie
    assert "Secure" not in cookie  # http base URL; see the https test
    assert issued["token"] not in cookie
    page = browser.get(f"{stack.url}/me")
    assert page.status_code == 200
    assert "Signed in as <strong>user-1</strong>" in page.text
    again = Browser()
    try:
        reused = again.get(issued["url"])
        assert reused.status_code == 400
        assert "already been used" in reused.text
    finally:
        again.close()


def test_no_forged_or_expired_session(stack: Stack, browser: Browser) -> None:
    assert browser.get(f"{stack.url}/me").status_code == 400  # no cookie
    sign_in(stack, browser)
    value = browser.client.cookies["broker_me"]
    forged = value[:-2] + ("AA" if not value.endswith("AA") else "BB")
    other = Browser()
    try:
        other.client.cookies.set("broker_me", forged, domain="127.0.0.1", path="/me")
        denied = other.get(f"{stack.url}/me")
        assert denied.status_code == 400
        assert "session_invalid" in denied.text
    finally:
        other.close()
    real = stack.rt.clock
    stack.rt.clock = lambda: real() + timedelta(minutes=31)
    try:
        assert browser.get(f"{stack.url}/me").status_code == 400
    finally:
        stack.rt.clock = real
    assert browser.get(f"{stack.url}/me").status_code == 200


def test_page_shows_grants_policies_counts_and_history(stack: Stack, browser: Browser) -> None:
    connection_id = connect(stack, browser, optional=[NAME])
    assert share(stack, connection_id) == 201
    assert share(stack, connection_id, data={**UPDATE, "x": {"email": "a@b.c"}}) == 403
    sign_in(stack, browser)
    page = browser.get(f"{stack.url}/me").text
    manifest = stack.rt.registry.get("sandbox").manifest
    assert f'data-connection="{connection_id}"' in page
    assert "Connected (1)" in page
    assert manifest.privacy_policy_url in page and manifest.terms_url in page
    granted, declined = page.split("Data you granted")[1].split("Data you declined")
    assert "user.content.work_items" in granted and NAME in granted
    assert "user.contact.email" in declined.split("</div>")[0]
    assert "1 delivered, the last on" in page and "1 blocked" in page
    assert page.count("<tr data-transfer=") == 2
    assert "Nothing was sent" in page
    detail = browser.get(f"{stack.url}/me/connections/{connection_id}")
    assert detail.status_code == 200
    assert detail.text.count("<tr data-transfer=") == 2


def test_history_pages(stack: Stack, browser: Browser) -> None:
    connection_id = connect(stack, browser, optional=[])
    for _ in range(27):
        assert share(stack, connection_id) == 403  # author.name not granted: blocked, fast
    sign_in(stack, browser)
    first = browser.get(f"{stack.url}/me/connections/{connection_id}").text
    assert first.count("<tr data-transfer=") == 25
    older = re.search(r'href="([^"]+\?cursor=[^"]+)">Older transfers', first).group(1)
    second = browser.get(older.replace("&amp;", "&")).text
    assert second.count("<tr data-transfer=") == 2
    ids = set(re.findall(r'data-transfer="([^"]+)"', first + second))
    assert len(ids) == 27


def test_disconnect_confirms_then_revokes(stack: Stack, browser: Browser) -> None:
    connection_id = connect(stack, browser, optional=[NAME])
    sign_in(stack, browser)
    confirm = browser.get(f"{stack.url}/me/connections/{connection_id}/disconnect")
    assert confirm.status_code == 200
    assert "<strong>Sandbox Co. receives nothing more</strong>" in confirm.text
    assert "deletes its access tokens" in confirm.text
    url = f"{stack.url}/me/connections/{connection_id}/disconnect"
    # without the session's CSRF secret, nothing happens
    assert browser.post(url, data={"csrf": "forged"}).status_code == 400
    with Session(stack.rt.engine) as db:
        assert db.get(Connection, connection_id).status == "active"
    done = browser.post(url, data={"csrf": csrf_of(confirm.text)})
    assert done.status_code == 303
    assert done.headers["location"] == f"/me?disconnected={connection_id}&provider=revoked"
    page = browser.get(f"{stack.url}{done.headers['location']}").text
    assert "Sandbox Co. is disconnected." in page
    with Session(stack.rt.engine) as db:
        assert db.get(Connection, connection_id).status == "revoked"
        events = db.exec(select(AuditRow).where(AuditRow.connection_id == connection_id)).all()
    actors = {e.event: e.actor for e in events}
    with stack.rt.engine.connect() as conn:  # log format 2: the user's pseudonym
        named = "user:" + (lookup(conn, "user-1") or "")
    assert actors["consent.withdrawn"] == actors["connection.revoked"] == named
    assert share(stack, connection_id) == 409  # refused from now on
    assert (
        browser.post(url, data={"csrf": csrf_of(confirm.text)})
        .headers["location"]
        .endswith("provider=already")
    )


def test_a_user_reaches_only_their_own_connections(stack: Stack, browser: Browser) -> None:
    theirs = connect(stack, browser, optional=[], user_id="user-2")
    assert share(stack, theirs, data={"work_item": {"id": "W-9"}}) == 201
    me = Browser()
    try:
        sign_in(stack, me, "user-1")
        page = me.get(f"{stack.url}/me").text
        assert theirs not in page and "Connected (0)" in page
        for path in ("", "/disconnect"):
            assert me.get(f"{stack.url}/me/connections/{theirs}{path}").status_code == 404
        csrf = csrf_of(page)
        refused = me.post(f"{stack.url}/me/connections/{theirs}/disconnect", data={"csrf": csrf})
        assert refused.status_code == 404
        report = me.get(f"{stack.url}/me/disclosures.csv")
        assert report.status_code == 200
        assert list(csv.DictReader(io.StringIO(_csv_body(report.text)))) == []
    finally:
        me.close()
    with Session(stack.rt.engine) as db:
        assert db.get(Connection, theirs).status == "active"


def _csv_body(text: str) -> str:
    """The report's CSV without its ``#`` lines (when, by whom, from which log state)."""
    assert text.startswith("# generated_at: ")
    return "".join(x for x in text.splitlines(keepends=True) if not x.startswith("#"))


def test_disclosure_report_downloads(stack: Stack, browser: Browser) -> None:
    connection_id = connect(stack, browser, optional=[NAME])
    assert share(stack, connection_id) == 201
    assert share(stack, connection_id, data={"x": {"email": "a@b.c"}}) == 403  # not disclosed
    sign_in(stack, browser)
    page = browser.get(f"{stack.url}/me").text
    assert 'href="/me/disclosures.csv"' in page or "/me/disclosures.csv" in page
    report = browser.get(f"{stack.url}/me/disclosures.csv")
    assert report.headers["content-disposition"] == 'attachment; filename="my-disclosures.csv"'
    (row,) = list(csv.DictReader(io.StringIO(_csv_body(report.text))))
    assert row["recipient"] == "sandbox" and row["recipient_name"] == "Sandbox Co."
    assert row["categories"] == "user.content.work_items; user.name"
    assert row["category_titles"] == "Work items; Name"
    as_json = browser.get(f"{stack.url}/me/disclosures.json").json()
    assert as_json["user_id"] == "user-1"
    assert [r["recipient"] for r in as_json["recipients"]] == ["sandbox"]
    # the same report the host gets from the API
    with stack.api() as api:
        same = api.get("/v1/users/user-1/disclosures").json()
    assert same.pop("report").keys() == as_json.pop("report").keys()  # made at other times
    assert same == as_json
    assert browser.get(f"{stack.url}/me/disclosures.xml").status_code == 422


def test_sign_out(stack: Stack, browser: Browser) -> None:
    sign_in(stack, browser)
    csrf = csrf_of(browser.get(f"{stack.url}/me").text)
    assert browser.post(f"{stack.url}/me/sign-out", data={"csrf": "x"}).status_code == 400
    out = browser.post(f"{stack.url}/me/sign-out", data={"csrf": csrf})
    assert out.status_code == 200
    assert 'broker_me=""' in out.headers["set-cookie"]
    assert browser.get(f"{stack.url}/me").status_code == 400


@pytest.mark.parametrize("path", ["/me", "/audit/login", "/connect/sandbox"])
def test_pages_carry_strict_headers(stack: Stack, browser: Browser, path: str) -> None:
    resp = browser.get(f"{stack.url}{path}")
    csp = resp.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp
    assert "script-src" not in csp  # falls back to 'none': the pages run no script
    assert "'unsafe-inline'" not in csp
    assert resp.headers["x-frame-options"] == "DENY"
    assert resp.headers["referrer-policy"] == "no-referrer"
    assert resp.headers["cache-control"] == "no-store"
    assert urlsplit(stack.url).scheme == "http"
    assert "strict-transport-security" not in resp.headers


def test_every_transfer_status_has_words_not_a_code(make_settings) -> None:
    from broker.runtime import build_runtime
    from broker.web.app import create_app

    rt = build_runtime(make_settings(), builtins=[], plugins=[], upgrade=True)
    try:
        macros = create_app(rt).state.templates.env.get_template("_macros.html").module
        for status, words in [
            ("outcome_unknown", "May have been received"),
            ("cancelled", "Cancelled"),
            ("pending", "Sending"),
        ]:
            html = str(macros.outcome(status))
            assert words in html and f"st-{status}" in html
    finally:
        rt.close()
