"""A user clicks through the demo with JavaScript off: connect, consent (an optional
category left unticked), approve at the provider, back; see it on /me; disconnect."""

from __future__ import annotations

import re

from playwright.sync_api import expect
from sqlmodel import Session, select

from broker.store.models import Connection, ConnectSession, ConsentRecord
from broker.store.subjects import lookup
from tests.browser.conftest import DESKTOP, PHONE, Demo, horizontal_overflow, screenshot

NAME = "Optional Name user.name"
EMAIL = "Optional Email address user.contact.email"


def test_connect_share_see_and_disconnect(page: object, demo: Demo) -> None:
    page.goto(f"{demo.url}/demo")
    screenshot(page, demo, "demo")
    page.get_by_role("button", name="Connect Sandbox Co. as demo-user").click()

    # the consent page
    expect(page).to_have_url(re.compile(r"/connect/sandbox\?session=cs_"))
    expect(page.get_by_role("heading", level=1)).to_have_text("Connect Sandbox Co.")
    expect(page.locator(".lead")).to_contain_text("Sandbox Co.'s own privacy policy and terms")
    for heading in ("Account information", "Application data"):
        expect(page.get_by_role("group", name=heading)).to_be_visible()
    work_items = page.locator('[data-category="user.content.work_items"]')
    expect(work_items).to_contain_text("Required")
    expect(work_items).to_contain_text("Post work item updates to your team channel")
    expect(work_items.get_by_role("checkbox")).to_have_count(0)
    name, email = page.get_by_role("checkbox", name=NAME), page.get_by_role("checkbox", name=EMAIL)
    expect(name).not_to_be_checked()  # optional data is opt-in
    expect(email).not_to_be_checked()
    expect(email).to_have_accessible_description(re.compile("Mention the assignee"))
    privacy = page.get_by_role("link", name="Sandbox Co. privacy policy")
    terms = page.get_by_role("link", name="Sandbox Co. terms of service")
    approve = page.get_by_role("button", name="Approve and continue to Sandbox Co.")
    for link in (privacy, terms):
        assert link.bounding_box()["y"] < approve.bounding_box()["y"]
    expect(privacy).to_have_attribute("href", f"{demo.url}/sandbox/privacy")
    expect(terms).to_have_attribute("href", f"{demo.url}/sandbox/terms")
    screenshot(page, demo, "consent")
    page.set_viewport_size(PHONE)
    assert horizontal_overflow(page) == 0
    screenshot(page, demo, "consent-phone", full_page=False)
    page.set_viewport_size(DESKTOP)

    name.check()  # Name granted; Email address left unticked
    approve.click()

    # at the third party, then back to the platform
    expect(page.get_by_text("Signed in as")).to_be_visible()
    page.get_by_role("button", name="Approve").click()
    expect(page).to_have_url(re.compile(r"/demo\?status=connected&connection_id=conn_"))
    expect(page.get_by_role("status")).to_contain_text("Sandbox Co. is connected.")
    page.get_by_role("button", name="Send an update (ungranted data removed)").click()
    expect(page.get_by_role("status")).to_contain_text("delivered to Sandbox Co.")

    # My integrations: the link's token is spent and dropped from the address bar
    page.get_by_role("button", name="Open My integrations").click()
    expect(page).to_have_url(f"{demo.url}/me")
    (cookie,) = [c for c in page.context.cookies() if c["name"] == "broker_me"]
    assert cookie["httpOnly"] and cookie["sameSite"] == "Lax" and cookie["path"] == "/me"
    assert not cookie["secure"]  # plain http on loopback; https makes it Secure
    card = page.locator("section.connection")
    expect(card).to_have_count(1)
    expect(card.get_by_role("heading", name="Sandbox Co.", exact=True)).to_be_visible()
    expect(card.locator(".status")).to_have_text("Connected")
    expect(card.locator(".facts")).to_contain_text("1 delivered, the last on")
    granted = card.locator(".grants > div").nth(0)
    declined = card.locator(".grants > div").nth(1)
    expect(granted).to_contain_text("Work items")
    expect(granted).to_contain_text("Name")
    expect(declined).to_contain_text("Email address")
    expect(card.get_by_role("link", name="Sandbox Co. privacy policy")).to_be_visible()
    rows = card.locator("table.history tbody tr")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("Delivered")
    expect(rows.first).to_contain_text("work_item.title")
    expect(rows.first).not_to_contain_text("email")  # declined, so removed before sending
    screenshot(page, demo, "me")

    card.get_by_role("link", name="Full history and details").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Sandbox Co.")
    expect(page.locator("table.history tbody tr")).to_have_count(1)
    screenshot(page, demo, "me-history")
    page.get_by_role("link", name="My integrations").click()

    # disconnect: a confirmation that says what will happen, then one button
    page.locator("section.connection").get_by_role("link", name="Disconnect Sandbox Co.").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Disconnect Sandbox Co.?")
    expect(page.locator("main")).to_contain_text("Sandbox Co. receives nothing more")
    expect(page.locator("main")).to_contain_text("deletes its access tokens")
    screenshot(page, demo, "me-disconnect")
    page.get_by_role("button", name="Disconnect Sandbox Co.").click()
    expect(page).to_have_url(re.compile(r"/me\?disconnected=conn_"))
    expect(page.get_by_role("status")).to_contain_text("Sandbox Co. is disconnected.")
    expect(page.get_by_role("status")).to_contain_text("confirmed that its access is revoked")
    expect(page.get_by_role("heading", name="Connected (0)")).to_be_visible()
    past = page.locator("section.connection")
    expect(past.locator(".status")).to_have_text("Disconnected")
    expect(past.get_by_role("link", name=re.compile("^Disconnect"))).to_have_count(0)
    screenshot(page, demo, "me-disconnected")

    with demo.api() as api:
        (conn,) = api.get("/v1/users/demo-user/connections").json()["connections"]
        assert conn["status"] == "revoked"
        assert conn["granted_categories"] == ["user.content.work_items", "user.name"]
        assert conn["declined_categories"] == ["user.contact.email"]
        log = api.get("/v1/audit/log").json()["entries"]
    withdrawn = [e for e in log if e["event"] == "consent.withdrawn"]
    with demo.rt.engine.connect() as db:  # log format 2 names the user by pseudonym
        assert [e["actor"] for e in withdrawn] == [f"user:{lookup(db, 'demo-user')}"]

    # and the demo can no longer share over it
    page.goto(f"{demo.url}/demo")
    expect(page.get_by_text("Connect Sandbox Co. first.")).to_be_visible()


def test_cancel_on_the_consent_page_leaves_nothing(page: object, demo: Demo) -> None:
    page.goto(f"{demo.url}/demo")
    page.get_by_role("button", name="Connect Sandbox Co. as demo-user").click()
    consent_url = page.url
    page.get_by_role("checkbox", name=EMAIL).check()
    page.get_by_role("button", name="Cancel").click()
    expect(page).to_have_url(f"{demo.url}/demo?status=cancelled&connector=sandbox")
    expect(page.get_by_role("status")).to_contain_text("nothing was connected")
    with Session(demo.rt.engine) as db:
        assert db.exec(select(Connection)).all() == []
        assert db.exec(select(ConsentRecord)).all() == []
        (used,) = db.exec(select(ConnectSession)).all()
        assert used.used_at is not None
    page.goto(consent_url)  # the link is spent
    expect(page.get_by_role("alert")).to_contain_text("already been used")


def test_consent_by_keyboard_alone(page: object, demo: Demo) -> None:
    """Tick an optional box and approve with Tab, Space and Enter only."""
    page.goto(f"{demo.url}/demo")
    page.get_by_role("button", name="Connect Sandbox Co. as demo-user").focus()
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", level=1)).to_have_text("Connect Sandbox Co.")

    def tab_to(target: object, limit: int = 40) -> None:
        for _ in range(limit):
            page.keyboard.press("Tab")
            if target.evaluate("el => el === document.activeElement"):
                return
        raise AssertionError("not reachable with the Tab key")

    email = page.get_by_role("checkbox", name=EMAIL)
    tab_to(email)
    page.keyboard.press("Space")
    expect(email).to_be_checked()
    tab_to(page.get_by_role("button", name="Approve and continue to Sandbox Co."))
    page.keyboard.press("Enter")
    expect(page.get_by_role("button", name="Approve")).to_be_visible()
    with Session(demo.rt.engine) as db:
        (conn,) = db.exec(select(Connection)).all()
    assert conn.status == "pending"
