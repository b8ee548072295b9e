"""An auditor, JavaScript off: get a key from the demo, sign in, filter, export, see the
recipients and their chart, check integrity, sign out."""

from __future__ import annotations

import csv
import io
import re

from playwright.sync_api import expect

from broker.flows.checkpoints import sign_checkpoint
from tests.browser.conftest import Demo, screenshot
from tests.browser.seed import backdated, seed_transfers, share


def test_sign_in_filter_export_verify_sign_out(page: object, demo: Demo) -> None:
    connection_id = seed_transfers(demo)  # today: two delivered, one blocked
    for days_ago, count in ((5, 2), (2, 1)):  # and three delivered on earlier days
        with backdated(demo, days_ago):
            for _ in range(count):
                share(demo, connection_id)
    page.goto(f"{demo.url}/audit")
    expect(page).to_have_url(f"{demo.url}/audit/login")  # no session yet

    page.goto(f"{demo.url}/demo")
    page.get_by_role("button", name="Get an auditor key").click()
    key = page.locator("#auditor-key").inner_text()
    assert key.startswith("brk_")
    page.get_by_role("link", name="Go to the auditor console").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Sign in to the auditor console")
    screenshot(page, demo, "audit-login")
    page.get_by_label("API key").fill("brk_not-a-key")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_contain_text("not valid")
    page.get_by_label("API key").fill(key)
    page.get_by_role("button", name="Sign in").click()

    expect(page).to_have_url(f"{demo.url}/audit")
    (cookie,) = [c for c in page.context.cookies() if c["name"] == "broker_audit"]
    assert cookie["httpOnly"] and cookie["sameSite"] == "Lax" and cookie["path"] == "/audit"
    assert key not in cookie["value"]
    rows = page.locator("table.transfers tbody tr")
    expect(rows).to_have_count(6)
    screenshot(page, demo, "audit-transfers")

    page.get_by_label("Outcome").select_option("blocked")
    page.get_by_role("button", name="Search").click()
    expect(page).to_have_url(re.compile(r"/audit\?.*status=blocked"))
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("Blocked")
    expect(rows.first).to_contain_text("user.contact.email")
    with page.expect_download() as download:
        page.get_by_role("link", name="CSV").click()
    text = download.value.path().read_text()
    assert text.startswith("# generated_at: ")  # pinned to a log state, then the header
    body = "".join(x for x in text.splitlines(keepends=True) if not x.startswith("#"))
    exported = list(csv.DictReader(io.StringIO(body)))
    assert [r["status"] for r in exported] == ["blocked"]
    # the transfer id opens the transfer's page: what was outside the grant, its entries
    rows.first.get_by_role("link", name=re.compile("transfer details")).click()
    expect(page.locator("h1")).to_contain_text("Transfer")
    expect(page.locator("ul.outside")).to_contain_text("user.contact.email")
    expect(page.locator("table.entries")).to_contain_text("transfer.blocked")
    page.go_back()

    page.get_by_label("Outcome").select_option("delivered")
    page.get_by_label("User id").fill("demo-user")
    page.get_by_label("Data category").select_option("user.name")
    page.get_by_role("button", name="Search").click()
    expect(rows).to_have_count(5)
    expect(page.get_by_label("User id")).to_have_value("demo-user")  # the filter stays
    with page.expect_download() as download:
        page.get_by_role("link", name="JSON Lines").click()
    assert len(download.value.path().read_text().splitlines()) == 5

    page.get_by_role("link", name="Recipients").click()
    summary = page.locator("table.recipients tbody tr")
    expect(summary).to_have_count(1)
    expect(summary.first).to_contain_text("Sandbox Co.")
    chart = page.get_by_role("img", name=re.compile("Delivered transfers per recipient per day"))
    expect(chart).to_be_visible()
    bars = chart.locator("rect")
    expect(bars).to_have_count(3)  # one per day with deliveries
    expect(bars.locator("title")).to_have_text(
        [re.compile(rf"Sandbox Co\.: {n} on \d{{4}}-\d\d-\d\d$") for n in (2, 1, 2)]
    )
    screenshot(page, demo, "audit-recipients")

    checkpoint = sign_checkpoint(demo.rt)
    page.get_by_role("link", name="Integrity").click()
    expect(page.get_by_role("status")).to_contain_text("Intact.")
    facts = page.locator("dl.facts")
    expect(facts).to_contain_text("Chain head (database)")
    expect(facts).to_contain_text(f"the first {checkpoint.tree_size} entries")
    expect(facts).to_contain_text(checkpoint.root_hash)
    screenshot(page, demo, "audit-integrity")

    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("status")).to_contain_text("You are signed out.")
    assert [c for c in page.context.cookies() if c["name"] == "broker_audit"] == []
    page.goto(f"{demo.url}/audit/integrity")
    expect(page).to_have_url(f"{demo.url}/audit/login")
