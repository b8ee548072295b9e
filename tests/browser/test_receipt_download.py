"""A user downloads the standard (Kantara, JWS) consent receipt from their page, and it is
genuine: it verifies with the published receipt keys and its digest is in the log."""

from __future__ import annotations

from pathlib import Path

from playwright.sync_api import expect

from broker.core.checkpoint import NoteVerifier
from broker.flows.receipts import check_receipt
from tests.browser.conftest import Contexts, Demo, axe_violations
from tests.browser.seed import connect_demo_user


def test_user_downloads_the_jws_receipt_from_me(contexts: Contexts, demo: Demo) -> None:
    page = contexts.new(javascript=True).new_page()  # axe runs in the page
    connection_id = connect_demo_user(demo, ["user.name"])
    with demo.api() as api:
        me = api.post("/v1/user-sessions", json={"user_id": "demo-user"}).json()["url"]
    page.goto(me)
    page.get_by_role("link", name="Full history and details for Sandbox Co.").click()
    expect(page).to_have_url(f"{demo.url}/me/connections/{connection_id}")
    link = page.get_by_role("link", name="the same receipt in the standard format")
    with page.expect_download() as info:
        link.click()
    download = info.value
    assert download.suggested_filename.endswith(".jws")
    path = Path(download.path())
    token = path.read_text(encoding="utf-8")

    key = demo.auditor_key()
    with demo.api() as api:
        api.headers["Authorization"] = f"Bearer {key}"
        vkeys = api.get("/v1/audit/public-key", params={"keys": "receipts", "format": "text"})
        entries = api.get("/v1/audit/log", params={"limit": 1000}).json()["entries"]
    keys = [NoteVerifier.from_vkey(line.split()[0]) for line in vkeys.text.splitlines() if line]
    result = check_receipt(token, keys)
    body = result["receipt"]
    assert body["piiPrincipalId"] == "demo-user"
    assert body["iso27560"]["connection_id"] == connection_id
    (granted,) = [
        e
        for e in entries
        if e["event"] == "consent.granted" and e["consent_id"] == body["consentReceiptID"]
    ]
    assert granted["details"]["receipt_sha256"] == result["sha256"]
    # the page with both receipt links stays clean for axe
    assert axe_violations(page) == []
