"""Every page people see, checked by axe-core (WCAG 2.x A/AA and best practice), at
phone width (no sideways scrolling), and against the CSP (nothing refused)."""

from __future__ import annotations

from datetime import UTC, datetime

from playwright.sync_api import expect

from broker.store.db import session_scope
from broker.store.policy_models import PolicyChange
from tests.browser.conftest import (
    DESKTOP,
    PHONE,
    Contexts,
    Demo,
    axe_violations,
    horizontal_overflow,
    screenshot,
)
from tests.browser.seed import seed_transfers

BLOCKING = ("serious", "critical")


def _pages(demo: Demo, connection_id: str) -> list[tuple[str, str]]:
    """(name, path) of each page, in an order that keeps the sessions they need."""
    with demo.api() as api:
        chooser = api.post("/v1/connect-sessions", json={"user_id": "user-2"}).json()["url"]
        consent = api.post(
            "/v1/connect-sessions", json={"user_id": "user-2", "connector": "sandbox"}
        ).json()["url"]
        me = api.post("/v1/user-sessions", json={"user_id": "demo-user"}).json()["url"]
        # the objection control, ticked (issue 11: objection to marketing)
        api.put("/v1/users/demo-user/preferences", json={"object_to": ["marketing"]})
        transfer = {
            status: api.get("/v1/transfers", params={"status": status, "limit": 1}).json()[
                "transfers"
            ][0]["id"]
            for status in ("delivered", "blocked")
        }
    return [
        ("demo", "/demo?status=connected&shared=delivered"),
        ("choose", chooser),
        ("consent", consent),
        ("error page", "/connect/sandbox?session=cs_unknown"),
        ("my integrations", me),
        ("marketing objection saved", "/me?preferences=saved"),
        ("connection history", f"/me/connections/{connection_id}"),
        ("disconnect confirmation", f"/me/connections/{connection_id}/disconnect"),
        ("auditor sign-in", "/audit/login"),
        ("transfers", "/audit?status=delivered"),
        ("transfers with a bad filter", "/audit?since=yesterday"),
        ("recipients", "/audit/recipients"),
        ("integrity", "/audit/integrity"),
        ("events", "/audit/events"),
        ("policy events", "/audit/events?event=policy."),
        ("events with a bad filter", "/audit/events?since=yesterday"),
        ("a delivered transfer", f"/audit/transfers/{transfer['delivered']}"),
        ("a blocked transfer", f"/audit/transfers/{transfer['blocked']}"),
        ("terms changes", "/audit/terms-changes"),
        ("webhook deliveries", "/audit/webhooks"),
        ("API reference", "/docs"),
    ]


def _terms_change(demo: Demo, connection_id: str) -> None:
    """A significant terms change that paused the connection (the Terms changes page)."""
    with session_scope(demo.rt.engine) as db:
        db.add(PolicyChange(
            id="pc_axe", connector_id="sandbox", before_version="a" * 64, after_version="b" * 64,
            detected_at=datetime.now(UTC), detected_by="check", classification="significant",
            changes=[{"code": "category_added", "significant": True, "text": "new data: email"}],
            digests={"before": {"privacy_policy": "c" * 64, "terms": None}, "after": {}},
            paused=[connection_id],
        ))  # fmt: skip


def test_every_page_passes_axe_fits_a_phone_and_keeps_its_csp(
    contexts: Contexts, demo: Demo
) -> None:
    connection_id = seed_transfers(demo)
    _terms_change(demo, connection_id)
    ctx = contexts.new(javascript=True)
    page = ctx.new_page()
    refused: list[str] = []
    page.on(
        "console",
        lambda msg: refused.append(msg.text) if "Content Security Policy" in msg.text else None,
    )
    page.on("pageerror", lambda exc: refused.append(str(exc)))
    # an auditor session for the console pages
    page.goto(f"{demo.url}/audit/login")
    page.get_by_label("API key").fill(demo.auditor_key())
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(f"{demo.url}/audit")

    report: dict[str, list[dict]] = {}
    for name, path in _pages(demo, connection_id):
        url = path if path.startswith("http") else demo.url + path
        page.set_viewport_size(DESKTOP)
        page.goto(url)
        expect(page.locator("h1")).to_have_count(1)
        for details in page.locator("details").all():  # check what is folded away too
            details.evaluate("el => el.open = true")
        report[name] = axe_violations(page)
        page.set_viewport_size(PHONE)
        assert horizontal_overflow(page) == 0, f"{name}: wider than a phone"
        if name == "my integrations":
            screenshot(page, demo, "me-phone", full_page=False)

    blocking = {
        name: [v for v in found if v["impact"] in BLOCKING] for name, found in report.items()
    }
    assert {k: v for k, v in blocking.items() if v} == {}, blocking
    # the pages have none of the lesser kinds either; keep it that way
    assert {k: v for k, v in report.items() if v} == {}, report
    assert refused == []
    # the check really ran on each page: axe reports nothing only when it found nothing
    assert set(report) == {name for name, _ in _pages(demo, connection_id)}


def test_the_check_notices_a_broken_page(contexts: Contexts) -> None:
    """Guard against a check that can never fail: an unlabelled field and poor contrast."""
    page = contexts.new(javascript=True).new_page()
    page.set_content(
        '<html lang="en"><title>t</title><main><h1>Form</h1>'
        '<input name="q"><p style="color:#bbb;background:#fff">faint</p></main></html>'
    )
    found = {v["id"]: v["impact"] for v in axe_violations(page)}
    assert found.get("label") == "critical"
    assert found.get("color-contrast") == "serious"
