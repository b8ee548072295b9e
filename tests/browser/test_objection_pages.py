"""The consent page's separate marketing section and the /me objection control, checked
by axe-core (0 violations), at phone width, and against the CSP; driven by clicks."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from playwright.sync_api import expect

from broker.core.catalog import default_catalog
from broker.demo import sandbox_setup
from broker.flows.keys import create_api_key
from broker.runtime import build_runtime
from broker.store.models import AuditRow
from broker.store.subjects import lookup
from broker.web.app import create_app
from tests.browser.conftest import DESKTOP, PHONE, Contexts, axe_violations, horizontal_overflow
from tests.conftest import LiveServer, free_socket
from tests.integration.test_objections import marketing_connector


@pytest.fixture
def served(make_settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, str, object]]:
    """A broker whose sandbox connector also uses the email for advertising (required)."""
    broker_sock, sandbox_sock = free_socket(), free_socket()
    broker_url = f"http://127.0.0.1:{broker_sock.getsockname()[1]}"
    sandbox_url = f"http://127.0.0.1:{sandbox_sock.getsockname()[1]}"
    settings = make_settings(base_url=broker_url)
    monkeypatch.setenv("BROKER_SANDBOX_CLIENT_SECRET", "sandbox-test-secret")
    _, sandbox_app = sandbox_setup(settings.callback_url)
    rt = build_runtime(
        settings,
        builtins=[marketing_connector(default_catalog(), sandbox_url)],
        plugins=[],
        upgrade=True,
    )
    _, admin = create_api_key(rt.engine, role="admin")
    sandbox = LiveServer(sandbox_app, sandbox_sock).start()
    broker = LiveServer(create_app(rt), broker_sock).start()
    try:
        yield broker.url, admin, rt
    finally:
        broker.stop()
        sandbox.stop()
        rt.close()


def test_marketing_choices_pass_axe_and_work_by_clicking(
    contexts: Contexts, served: tuple[str, str, object]
) -> None:
    url, admin, rt = served
    api = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {admin}"}, timeout=10)

    def consent_url(user_id: str) -> str:
        body = {"user_id": user_id, "connector": "sandbox"}
        return api.post("/v1/connect-sessions", json=body).json()["url"]

    page = contexts.new(javascript=True).new_page()
    refused: list[str] = []
    page.on(
        "console",
        lambda msg: refused.append(msg.text) if "Content Security Policy" in msg.text else None,
    )
    report = {}
    page.goto(consent_url("user-a"))
    expect(page.get_by_role("heading", name="Marketing and promotion")).to_be_visible()
    expect(page.locator('#marketing ~ fieldset input[value="user.contact.email"]')).to_be_visible()
    report["consent, marketing choice"] = axe_violations(page)
    page.set_viewport_size(PHONE)
    assert horizontal_overflow(page) == 0
    page.set_viewport_size(DESKTOP)

    me = api.post("/v1/user-sessions", json={"user_id": "user-b"}).json()["url"]
    page.goto(me)
    box = page.get_by_role("checkbox", name="Marketing")
    expect(box).not_to_be_checked()
    report["me, objection control"] = axe_violations(page)
    box.check()
    page.get_by_role("button", name="Save my choice").click()
    expect(page.get_by_role("status")).to_contain_text("Your choice is saved")
    expect(page.get_by_role("checkbox", name="Marketing")).to_be_checked()
    report["me, objection saved"] = axe_violations(page)
    page.set_viewport_size(PHONE)
    assert horizontal_overflow(page) == 0
    page.set_viewport_size(DESKTOP)

    page.goto(consent_url("user-b"))  # the objecting user: shown declined, no box
    expect(page.locator("#marketing ~ fieldset")).to_contain_text("You object to marketing")
    expect(page.locator('#marketing ~ fieldset input[type="checkbox"]')).to_have_count(0)
    report["consent, objected"] = axe_violations(page)

    assert {k: v for k, v in report.items() if v} == {}, report
    assert refused == []
    with rt.engine.connect() as db:  # type: ignore[attr-defined]
        rows = db.execute(
            AuditRow.__table__.select().where(AuditRow.event == "preference.objected")  # type: ignore[attr-defined]
        ).all()
        named = lookup(db, "user-b")  # log format 2 names the user by pseudonym
    assert named and [(r.user_id, r.actor) for r in rows] == [(named, f"user:{named}")]
    api.close()
