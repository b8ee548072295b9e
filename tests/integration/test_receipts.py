"""Signed consent receipts: a signed note anyone with the verifier key can check."""

from __future__ import annotations

import json

import pytest

from broker.core.checkpoint import NoteVerifier, open_note
from broker.core.errors import InvalidInput
from tests.integration.conftest import Browser, Stack, connect
from tests.integration.test_me_pages import sign_in

NAME = "user.name"


def _verifiers(stack: Stack) -> list[NoteVerifier]:
    with stack.api(stack.auditor_key) as api:
        resp = api.get("/v1/audit/public-key", params={"format": "text", "keys": "receipts"})
    assert resp.status_code == 200, resp.text
    lines = [ln for ln in resp.text.splitlines() if ln.strip()]
    return [NoteVerifier.from_vkey(ln.split()[0]) for ln in lines]


def test_receipt_is_signed_and_says_what_was_agreed(stack: Stack, browser: Browser) -> None:
    connection_id = connect(stack, browser, optional=[NAME])
    with stack.api(stack.auditor_key) as api:
        conn = api.get(f"/v1/connections/{connection_id}").json()
        resp = api.get(f"/v1/consents/{conn['consent_id']}/receipt")
        missing = api.get("/v1/consents/cons_nope/receipt")
    assert resp.status_code == 200
    note = resp.text
    text, good = open_note(note, _verifiers(stack))
    assert good
    body = json.loads(text)
    assert body["receipt_version"] == "broker-consent-receipt/1"
    assert body["consent_id"] == conn["consent_id"]
    assert body["user_id"] == "user-1"
    assert body["granted_categories"] == ["user.content.work_items", NAME]
    assert body["declined_categories"] == ["user.contact.email"]
    manifest = stack.rt.registry.get("sandbox").manifest
    assert body["privacy_policy_url"] == manifest.privacy_policy_url
    assert body["terms_url"] == manifest.terms_url
    # one changed byte and it no longer verifies
    forged = note.replace('"user.contact.email"', '"user.contact.emai1"')
    assert forged != note
    with pytest.raises(InvalidInput):
        open_note(forged, _verifiers(stack))
    assert missing.status_code == 404


def test_user_downloads_own_receipt_only(stack: Stack, browser: Browser) -> None:
    mine = connect(stack, browser, optional=[], user_id="user-1")
    other_browser = Browser()
    try:
        theirs = connect(stack, other_browser, optional=[], user_id="user-2")
    finally:
        other_browser.close()
    sign_in(stack, browser, "user-1")
    page = browser.get(f"{stack.url}/me/connections/{mine}")
    assert "signed consent receipt" in page.text
    resp = browser.get(f"{stack.url}/me/connections/{mine}/receipt")
    assert resp.status_code == 200
    text, _ = open_note(resp.text, _verifiers(stack))
    assert json.loads(text)["connection_id"] == mine
    assert browser.get(f"{stack.url}/me/connections/{theirs}/receipt").status_code == 404
