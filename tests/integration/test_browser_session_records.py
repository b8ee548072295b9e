"""Browser sessions are server-side records: signing out and revoking the key end them at
once (every copy of the cookie), failed console sign-ins are audit events, sign-in is rate
limited per client address and per key id, and links come from BROKER_BASE_URL."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta

import httpx
import pytest
from sqlmodel import Session, select

from broker.cli import main
from broker.flows.keys import create_api_key, revoke_api_key
from broker.runtime import Runtime, build_runtime
from broker.store.models import AuditRow, BrowserSessionRecord, RateLimitCounter
from broker.web.app import create_app
from tests.conftest import LiveServer, free_socket
from tests.integration.conftest import Browser, Stack
from tests.integration.test_audit_console import login_form, sign_in


def _copy_of(browser: Browser, name: str, path: str) -> Browser:
    """Another browser holding a copy of ``browser``'s session cookie."""
    thief = Browser()
    thief.client.cookies.set(name, browser.client.cookies[name], domain="127.0.0.1", path=path)
    return thief


def _events(rt: Runtime, event: str) -> list[AuditRow]:
    with Session(rt.engine) as session:
        return list(session.exec(select(AuditRow).where(AuditRow.event == event)).all())


# --- ending sessions ----------------------------------------------------------------


def test_console_sign_out_ends_every_copy_of_the_session(stack: Stack, browser: Browser) -> None:
    sign_in(browser, stack)
    thief = _copy_of(browser, "broker_audit", "/audit")
    try:
        assert thief.get(f"{stack.url}/audit").status_code == 200
        page = browser.get(f"{stack.url}/audit").text
        csrf = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
        out = browser.post(f"{stack.url}/audit/logout", data={"csrf": csrf})
        assert out.headers["location"] == "/audit/login?signed_out=1"
        again = thief.get(f"{stack.url}/audit")
        assert again.status_code == 303 and again.headers["location"] == "/audit/login"
    finally:
        thief.close()


def test_me_sign_out_ends_every_copy_of_the_session(stack: Stack, browser: Browser) -> None:
    with stack.api() as api:
        link = api.post("/v1/user-sessions", json={"user_id": "user-1"}).json()["url"]
    browser.get(link)
    thief = _copy_of(browser, "broker_me", "/me")
    try:
        page = thief.get(f"{stack.url}/me")
        assert page.status_code == 200
        csrf = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)
        assert browser.post(f"{stack.url}/me/sign-out", data={"csrf": csrf}).status_code == 200
        denied = thief.get(f"{stack.url}/me")
        assert denied.status_code == 400 and "session_invalid" in denied.text
    finally:
        thief.close()


def test_broker_admin_revoke_key_ends_its_console_sessions_at_once(
    stack: Stack, browser: Browser, monkeypatch: pytest.MonkeyPatch
) -> None:
    row, raw = create_api_key(stack.rt.engine, role="auditor")
    sign_in(browser, stack, raw)
    assert browser.get(f"{stack.url}/audit").status_code == 200
    settings = stack.rt.settings
    monkeypatch.setenv("BROKER_HOME", str(settings.home))
    monkeypatch.setenv("BROKER_DATABASE_URL", settings.resolved_database_url)
    monkeypatch.setenv("BROKER_BASE_URL", settings.resolved_base_url)
    assert main(["admin", "revoke-key", row.id]) == 0
    with Session(stack.rt.engine) as session:
        (record,) = session.exec(
            select(BrowserSessionRecord).where(BrowserSessionRecord.api_key_id == row.id)
        ).all()
    assert record.ended_at is not None  # ended in the database, not only refused later
    assert browser.get(f"{stack.url}/audit").headers["location"] == "/audit/login"


# --- failed sign-ins -----------------------------------------------------------------


def test_failed_console_sign_ins_are_audit_events_without_the_key(
    stack: Stack, browser: Browser
) -> None:
    csrf = login_form(browser, stack)
    url = f"{stack.url}/audit/login"
    guess = "brk_" + "g" * 43
    assert browser.post(url, data={"key": guess, "csrf": csrf}).status_code == 401
    row, raw = create_api_key(stack.rt.engine, role="auditor")
    revoke_api_key(stack.rt.engine, row.id)
    assert browser.post(url, data={"key": raw, "csrf": csrf}).status_code == 401
    assert browser.post(url, data={"key": "", "csrf": csrf}).status_code == 401
    events = _events(stack.rt, "console.login_failed")
    assert [e.details["reason"] for e in events] == ["unknown_key", "revoked_key", "no_key"]
    unknown, revoked, empty = events
    assert unknown.actor == "client:127.0.0.1" and unknown.outcome == "refused"
    assert unknown.details["broker_key_format"] is True and "key_id" not in unknown.details
    assert revoked.details["key_id"] == row.id
    assert empty.details["broker_key_format"] is False
    for e in events:
        text = e.model_dump_json()
        assert guess not in text and raw not in text and raw[4:12] not in text
    with stack.api(stack.auditor_key) as api:
        assert api.get("/v1/audit/verify").json()["ok"] is True


# --- rate limits ---------------------------------------------------------------------


@dataclass
class Broker:
    rt: Runtime
    url: str


@pytest.fixture
def limited(make_settings, request: pytest.FixtureRequest) -> Iterator[Broker]:
    sock = free_socket()
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    settings = make_settings(base_url=url, **request.param)
    rt = build_runtime(settings, plugins=[], upgrade=True)
    server = LiveServer(create_app(rt), sock).start()
    try:
        yield Broker(rt, url)
    finally:
        server.stop()
        rt.close()


def _attempt(broker: Broker, client: httpx.Client, key: str) -> httpx.Response:
    page = client.get(f"{broker.url}/audit/login")
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)
    return client.post(f"{broker.url}/audit/login", data={"key": key, "csrf": csrf})


@pytest.mark.parametrize(
    "limited", [{"console_login_limit_per_address": "3/minute"}], indirect=True
)
def test_sign_in_is_rate_limited_per_client_address(limited: Broker) -> None:
    _, good = create_api_key(limited.rt.engine, role="auditor")
    with httpx.Client(timeout=10) as client:
        codes = [_attempt(limited, client, f"brk_wrong{i}").status_code for i in range(3)]
        assert codes == [401, 401, 401]
        refused = _attempt(limited, client, good)  # even the right key, from this address
    assert refused.status_code == 429
    retry = int(refused.headers["retry-after"])
    assert 1 <= retry <= 60
    assert "rate_limited" in refused.text and "too many sign-in attempts" in refused.text
    assert "broker_audit" not in refused.headers.get("set-cookie", "")
    # the refused attempt was not checked, so it is not one more audit event
    assert len(_events(limited.rt, "console.login_failed")) == 3


@pytest.mark.parametrize(
    "limited",
    [
        {
            "console_login_limit_per_address": "100/minute",
            "console_login_limit_per_key": "2/minute",
            "rate_limit_storage": "database",
        }
    ],
    indirect=True,
)
def test_sign_in_is_rate_limited_per_key_id_in_the_database(limited: Broker) -> None:
    row, key = create_api_key(limited.rt.engine, role="auditor")
    with httpx.Client(timeout=10) as client:
        assert _attempt(limited, client, key).status_code == 303
        client.cookies.clear()
        assert _attempt(limited, client, key).status_code == 303
        client.cookies.clear()
        refused = _attempt(limited, client, key)
        assert refused.status_code == 429
        assert 1 <= int(refused.headers["retry-after"]) <= 60
        # counted in the shared table, keyed by the key's id (never the key)
        with Session(limited.rt.engine) as session:
            keys = [c.key for c in session.exec(select(RateLimitCounter)).all()]
        assert any(row.id in k for k in keys) and not any(key in k for k in keys)
        # the window ends (the broker's clock moves on): the key may sign in again
        real = limited.rt.clock
        limited.rt.clock = lambda: real() + timedelta(seconds=61)
        try:
            client.cookies.clear()
            assert _attempt(limited, client, key).status_code == 303
        finally:
            limited.rt.clock = real


# --- links -----------------------------------------------------------------------------


def test_links_come_from_the_base_url_not_the_host_header(stack: Stack) -> None:
    with httpx.Client(timeout=10, headers={"Host": "evil.example"}) as client:
        page = client.get(f"{stack.url}/audit/login")
    assert page.status_code == 200
    assert "evil.example" not in page.text
    assert f'action="{stack.url}/audit/login"' in page.text
