"""/audit: the auditor console, signed in with an API key through a form."""

from __future__ import annotations

import csv
import io
import json
import re

from fastapi.testclient import TestClient
from sqlalchemy import text
from sqlmodel import Session, select

from broker.core.catalog import default_catalog
from broker.demo import sandbox_connector
from broker.flows.checkpoints import sign_checkpoint
from broker.flows.keys import create_api_key, revoke_api_key
from broker.runtime import build_runtime
from broker.web.app import create_app
from tests.integration.conftest import Browser, Stack, connect

UPDATE = {"work_item": {"id": "W-1", "title": "Ship it"}, "author": {"name": "Ann"}}


def login_form(browser: Browser, stack: Stack) -> str:
    page = browser.get(f"{stack.url}/audit/login")
    assert page.status_code == 200
    assert "broker_login_csrf=" in page.headers["set-cookie"]
    return re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)


def sign_in(browser: Browser, stack: Stack, key: str | None = None) -> None:
    csrf = login_form(browser, stack)
    resp = browser.post(
        f"{stack.url}/audit/login", data={"key": key or stack.auditor_key, "csrf": csrf}
    )
    assert resp.status_code == 303, resp.text
    assert resp.headers["location"] == "/audit"


def seed(stack: Stack, browser: Browser) -> str:
    connection_id = connect(stack, browser, optional=["user.name"], user_id="user-1")
    with stack.api() as api:
        for data, expected in ((UPDATE, 201), ({**UPDATE, "x": {"email": "a@b.c"}}, 403)):
            resp = api.post(
                f"/v1/connections/{connection_id}/transfers",
                json={"action": "post_message", "data": data},
            )
            assert resp.status_code == expected, resp.text
    return connection_id


def test_console_needs_a_session(stack: Stack, browser: Browser) -> None:
    for path in ("/audit", "/audit/recipients", "/audit/integrity", "/audit/export"):
        resp = browser.get(f"{stack.url}{path}")
        assert resp.status_code == 303, path
        assert resp.headers["location"] == "/audit/login"


def test_sign_in_checks_key_role_and_csrf(stack: Stack, browser: Browser) -> None:
    csrf = login_form(browser, stack)
    url = f"{stack.url}/audit/login"
    assert browser.post(url, data={"key": stack.auditor_key, "csrf": "x"}).status_code == 400
    wrong = browser.post(url, data={"key": "brk_nope", "csrf": csrf})
    assert wrong.status_code == 401
    assert "the API key is not valid" in wrong.text
    assert "WWW-Authenticate" not in wrong.headers  # a page, not a Bearer challenge
    ok = browser.post(url, data={"key": stack.auditor_key, "csrf": csrf})
    assert ok.status_code == 303
    cookie = ok.headers["set-cookie"]
    assert re.match(r"broker_audit=[A-Za-z0-9_-]{43};", cookie)  # a random session id only
    for flag in ("HttpOnly", "Path=/audit", "SameSite=lax", "Max-Age=14400"):
        assert flag in cookie
    assert stack.auditor_key not in cookie
    page = browser.get(f"{stack.url}/audit")
    assert page.status_code == 200 and "(auditor)" in page.text
    # an admin key works too
    admin = Browser()
    try:
        sign_in(admin, stack, stack.admin_key)
        assert "(admin)" in admin.get(f"{stack.url}/audit").text
    finally:
        admin.close()


def test_revoking_the_key_ends_its_sessions(stack: Stack, browser: Browser) -> None:
    row, raw = create_api_key(stack.rt.engine, role="auditor")
    sign_in(browser, stack, raw)
    assert browser.get(f"{stack.url}/audit").status_code == 200
    revoke_api_key(stack.rt.engine, row.id)
    assert browser.get(f"{stack.url}/audit").headers["location"] == "/audit/login"


def test_a_user_session_is_not_a_console_session(stack: Stack, browser: Browser) -> None:
    with stack.api() as api:
        link = api.post("/v1/user-sessions", json={"user_id": "user-1"}).json()["url"]
    browser.get(link)
    user_cookie = browser.client.cookies["broker_me"]
    browser.client.cookies.set("broker_audit", user_cookie, domain="127.0.0.1", path="/audit")
    assert browser.get(f"{stack.url}/audit").headers["location"] == "/audit/login"


def test_search_filters_and_pages(stack: Stack, browser: Browser) -> None:
    seed(stack, browser)
    sign_in(browser, stack)
    everything = browser.get(f"{stack.url}/audit").text
    assert everything.count("<tr data-transfer=") == 2
    blocked = browser.get(f"{stack.url}/audit?status=blocked").text
    assert blocked.count("<tr data-transfer=") == 1 and "outside the grant" in blocked
    # the row names the refused field (from its blocked entry: a reject-mode row keeps none)
    assert 'Outside the grant:</span> <code class="outside">x.email</code>' in blocked
    assert everything.count("Outside the grant:") == 1  # the delivered row names none
    assert '<option value="blocked" selected>' in blocked
    none = browser.get(f"{stack.url}/audit?user=someone-else").text
    assert "No transfers match this filter." in none
    since = browser.get(f"{stack.url}/audit?since=2999-01-01T00:00").text
    assert "No transfers match this filter." in since
    bad = browser.get(f"{stack.url}/audit?since=yesterday")
    assert bad.status_code == 200 and 'role="alert"' in bad.text
    assert "is not a date and time" in bad.text
    # paging keeps the filter
    with stack.api() as api:
        conn = api.get("/v1/users/user-1/connections").json()["connections"][0]["id"]
        for _ in range(25):
            api.post(
                f"/v1/connections/{conn}/transfers",
                json={"action": "post_message", "data": {"x": {"email": "a@b.c"}}},
            )
    first = browser.get(f"{stack.url}/audit?status=blocked&limit=25").text
    assert first.count("<tr data-transfer=") == 25
    older = re.search(r'href="([^"]+)">Older transfers', first).group(1).replace("&amp;", "&")
    assert "status=blocked" in older and "limit=25" in older
    assert browser.get(older).text.count("<tr data-transfer=") == 1


def test_export_follows_the_filter(stack: Stack, browser: Browser) -> None:
    seed(stack, browser)
    sign_in(browser, stack)
    page = browser.get(f"{stack.url}/audit?status=delivered").text
    link = re.search(r'href="([^"]+format=csv[^"]*)"', page).group(1).replace("&amp;", "&")
    assert "status=delivered" in link
    exported = browser.get(link)
    assert exported.headers["content-type"].startswith("text/csv")
    meta = [x for x in exported.text.splitlines() if x.startswith("#")]
    assert meta[0].startswith("# generated_at: ") and "# log_head_seq: " in meta[-1]
    body = "".join(x + "\n" for x in exported.text.splitlines() if not x.startswith("#"))
    rows = list(csv.DictReader(io.StringIO(body)))
    assert [r["status"] for r in rows] == ["delivered"]
    assert rows[0]["categories"] == "user.content.work_items; user.name"  # one cell
    lines = browser.get(f"{stack.url}/audit/export?format=jsonl").text.splitlines()
    assert sorted(json.loads(x)["status"] for x in lines) == ["blocked", "delivered"]
    assert browser.get(f"{stack.url}/audit/export?format=xml").status_code == 422


def test_recipients_and_chart(stack: Stack, browser: Browser) -> None:
    seed(stack, browser)
    sign_in(browser, stack)
    page = browser.get(f"{stack.url}/audit/recipients?days=7").text
    assert 'data-recipient="sandbox"' in page
    assert '<option value="7" selected>' in page
    svg = page[page.index("<svg viewBox") : page.index("</svg>")]
    assert 'role="img"' in svg
    (title,) = re.findall(r"<rect [^>]*><title>([^<]+)</title>", svg)
    assert title.startswith("Sandbox Co.: 1 on ")
    assert "1 delivered transfer in all; Sandbox Co.: 1." in svg


def test_integrity_ok_then_tampering_is_shown(stack: Stack, browser: Browser) -> None:
    seed(stack, browser)
    sign_in(browser, stack)
    page = browser.get(f"{stack.url}/audit/integrity").text
    assert "<strong>Intact.</strong>" in page and "Chain head (database)" in page
    assert "none signed yet" in page
    row = sign_checkpoint(stack.rt)
    page = browser.get(f"{stack.url}/audit/integrity").text
    assert f"the first {row.tree_size} entries" in page and row.root_hash in page
    with Session(stack.rt.engine) as db:
        db.execute(text("UPDATE audit_log SET purpose = 'changed' WHERE seq = 2"))
        db.commit()
    # Each load verifies only what was appended since the last verification: a change
    # to an entry verified before shows in a full verification, started from the page.
    page = browser.get(f"{stack.url}/audit/integrity").text
    assert "<strong>Intact.</strong>" in page
    csrf = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
    started = browser.post(f"{stack.url}/audit/integrity/verify", data={"csrf": csrf})
    assert started.status_code == 303
    assert started.headers["location"] == "/audit/integrity?started=1"
    from broker.flows.integrity import wait_for
    from broker.store.verification_models import AuditVerification

    with Session(stack.rt.engine) as db:
        run = db.exec(select(AuditVerification).where(AuditVerification.kind == "full")).all()[-1]
    assert wait_for(stack.rt, run.id, timeout=60).status == "done"
    broken = browser.get(f"{stack.url}/audit/integrity?started=1").text
    assert "<strong>Not intact.</strong>" in broken
    assert re.search(r"<dt>First bad entry</dt><dd>2</dd>", broken)
    assert "audit.verified" in broken and 'http-equiv="refresh"' not in broken


def test_sign_out_needs_csrf_and_clears_the_cookie(stack: Stack, browser: Browser) -> None:
    sign_in(browser, stack)
    page = browser.get(f"{stack.url}/audit").text
    csrf = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
    assert browser.post(f"{stack.url}/audit/logout", data={"csrf": "x"}).status_code == 400
    out = browser.post(f"{stack.url}/audit/logout", data={"csrf": csrf})
    assert out.headers["location"] == "/audit/login?signed_out=1"
    assert 'broker_audit=""' in out.headers["set-cookie"]
    assert browser.get(f"{stack.url}/audit").status_code == 303


def test_https_base_url_makes_cookies_secure(make_settings) -> None:
    base = "https://broker.example.com"
    connector = sandbox_connector(default_catalog(), "https://sandbox.example.com")
    rt = build_runtime(make_settings(base_url=base), builtins=[connector], plugins=[], upgrade=True)
    try:
        _, key = create_api_key(rt.engine, role="auditor")
        with TestClient(create_app(rt), base_url=base, follow_redirects=False) as client:
            page = client.get("/audit/login")
            assert "Secure" in page.headers["set-cookie"]
            assert page.headers["strict-transport-security"] == "max-age=31536000"
            csrf = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)
            signed_in = client.post("/audit/login", data={"key": key, "csrf": csrf})
            assert signed_in.status_code == 303
            assert "Secure" in signed_in.headers["set-cookie"]
            assert "HttpOnly" in signed_in.headers["set-cookie"]
            csrf = re.search(r'name="csrf" value="([^"]+)"', client.get("/audit").text).group(1)
            out = client.post("/audit/logout", data={"csrf": csrf})
            # One policy: every cookie set or cleared on the way carries every attribute
            # (a cookie cleared without them, as the sign-in CSRF token once was, is not).
            cookies = [c for r in (page, signed_in, out) for c in r.headers.get_list("set-cookie")]
            assert len(cookies) >= 4  # token set; session set, token cleared; session cleared
            for cookie in cookies:
                attrs = {a.strip().split("=")[0].lower() for a in cookie.split(";")[1:]}
                assert {"httponly", "secure", "samesite", "path"} <= attrs, cookie
                assert "samesite=lax" in cookie.lower() and "path=/audit" in cookie.lower()
    finally:
        rt.close()
