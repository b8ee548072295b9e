"""The /me notice of changed terms, the policy diff and the re-consent page, checked by
axe-core (0 violations), at phone width and against the CSP; driven by clicks."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from playwright.sync_api import expect
from sqlmodel import Session

from broker.demo import sandbox_connector
from broker.flows.policy_checks import check_policies
from broker.store.models import Connection
from tests.browser.conftest import DESKTOP, PHONE, Contexts, axe_violations, horizontal_overflow
from tests.integration.conftest import Browser, Stack, build_stack, connect
from tests.integration.test_reconsent import POLICY, SOLD


@pytest.fixture
def stack(make_settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[Stack]:
    yield from build_stack(make_settings, monkeypatch, sandbox_connector)


def test_notice_diff_and_reconsent_pass_axe_and_work_by_clicking(
    contexts: Contexts, stack: Stack
) -> None:
    stack.provider.set_policy("privacy", POLICY)
    http = Browser()
    try:
        conn_id = connect(stack, http, optional=["user.name"])
    finally:
        http.close()
    stack.provider.set_policy("privacy", SOLD)
    (outcome,) = check_policies(stack.rt, actor="test")
    assert outcome.change is not None and outcome.change.paused == [conn_id]

    page = contexts.new(javascript=True).new_page()  # axe runs as script
    refused: list[str] = []
    page.on(
        "console",
        lambda msg: refused.append(msg.text) if "Content Security Policy" in msg.text else None,
    )
    with stack.api() as api:
        link = api.post("/v1/user-sessions", json={"user_id": "user-1"}).json()["url"]
    report = {}
    page.goto(link)
    notice = page.get_by_role("region", name="Sandbox Co. changed its terms: sharing is paused")
    expect(notice).to_contain_text("the privacy policy text changed")
    report["me, notice"] = axe_violations(page)
    page.set_viewport_size(PHONE)
    assert horizontal_overflow(page) == 0
    page.set_viewport_size(DESKTOP)

    notice.get_by_role("link", name="See what changed in the privacy policy").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("privacy policy")
    expect(page.locator("li.added").first).to_contain_text("everything is sold to data brokers")
    expect(page.locator("li.removed").first).to_contain_text("Clause 3: nothing here")
    report["policy diff"] = axe_violations(page)
    page.set_viewport_size(PHONE)
    assert horizontal_overflow(page) == 0
    page.set_viewport_size(DESKTOP)

    page.go_back()
    page.get_by_role("link", name="Review and decide").click()
    expect(page.get_by_role("heading", name="What changed")).to_be_visible()
    expect(page.get_by_role("checkbox", name="Name")).to_be_checked()  # unchanged: kept
    expect(page.get_by_role("checkbox", name="Email")).not_to_be_checked()
    report["reconsent page"] = axe_violations(page)
    page.set_viewport_size(PHONE)
    assert horizontal_overflow(page) == 0
    page.set_viewport_size(DESKTOP)

    page.get_by_role("button", name="Agree to the new terms").click()
    expect(page.get_by_role("status")).to_contain_text("You agreed to Sandbox Co.'s new terms")
    report["me, agreed"] = axe_violations(page)

    assert {k: v for k, v in report.items() if v} == {}, report
    assert refused == []
    with Session(stack.rt.engine) as db:
        conn = db.get(Connection, conn_id)
    assert conn is not None and conn.status == "active"
    with httpx.Client(base_url=stack.url, timeout=10) as plain:  # no session: no diff
        assert plain.get(f"/me/changes/{outcome.change.id}/privacy_policy").status_code == 400
