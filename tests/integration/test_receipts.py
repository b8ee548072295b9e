"""Signed consent receipts: a signed note anyone with the verifier key can check."""

from __future__ import annotations

import json

import pytest

from broker.core.checkpoint import NoteVerifier, SigningKeyRing, open_note
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


# --- Kantara consent receipts as JWS (issue 14, point 4) ----------------------------


def _consent_id(stack: Stack, connection_id: str) -> str:
    with stack.api(stack.auditor_key) as api:
        return api.get(f"/v1/connections/{connection_id}").json()["consent_id"]


def _granted_entry(stack: Stack, consent_id: str) -> dict:
    with stack.api(stack.auditor_key) as api:
        entries = api.get("/v1/audit/log", params={"limit": 1000}).json()["entries"]
    (entry,) = [
        e for e in entries if e["event"] == "consent.granted" and e["consent_id"] == consent_id
    ]
    return entry


def test_jws_receipt_is_kantara_signed_by_the_receipt_key_and_in_the_log(
    stack: Stack, browser: Browser
) -> None:
    from joserfc import jws
    from joserfc.jwk import KeySet

    from broker.core.kantara import KANTARA_FIELDS, verify_receipt_jws

    consent_id = _consent_id(stack, connect(stack, browser, optional=[NAME]))
    with stack.api(stack.auditor_key) as api:
        resp = api.get(f"/v1/consents/{consent_id}/receipt", params={"format": "jws"})
        note = api.get(f"/v1/consents/{consent_id}/receipt")  # the default stays the note
        jwks = api.get("/v1/audit/public-key", params={"keys": "receipts", "format": "jwks"})
        refused = api.get("/v1/audit/public-key", params={"format": "jwks"})
        bad_format = api.get(f"/v1/consents/{consent_id}/receipt", params={"format": "xml"})
        missing = api.get("/v1/consents/cons_nope/receipt", params={"format": "jws"})
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"] == "application/jose"
    assert f'filename="consent-{consent_id}.jws"' in resp.headers["content-disposition"]
    assert note.text.startswith("{") and "broker-consent-receipt/1" in note.text
    out = verify_receipt_jws(resp.text, _verifiers(stack))
    body = out["receipt"]
    assert all(name in body for name in KANTARA_FIELDS)
    assert body["consentReceiptID"] == consent_id and body["piiPrincipalId"] == "user-1"
    (service,) = body["services"]
    manifest = stack.rt.registry.get("sandbox").manifest
    assert service["service"] == manifest.name
    granted = sorted(c for p in service["purposes"] for c in p["piiCategory"])
    assert granted == ["user.content.work_items", NAME]
    assert body["iso27560"]["pii_declined"] == ["user.contact.email"]
    assert body["iso27560"]["notice"]["third_party_privacy_policy_url"] == (
        manifest.privacy_policy_url
    )
    # the log's consent.granted entry carries the digest of exactly this payload
    assert _granted_entry(stack, consent_id)["details"]["receipt_sha256"] == out["sha256"]
    # JOSE tools verify it with the published JWK Set, by kid
    assert jwks.status_code == 200, jwks.text
    keys = KeySet.import_key_set(jwks.json())
    assert jws.deserialize_compact(resp.text, keys, algorithms=["Ed25519"]).payload
    assert refused.status_code == 422
    assert refused.json()["error"]["code"] == "invalid_input"
    assert bad_format.status_code == 422
    assert missing.status_code == 404


def test_jws_receipt_is_the_same_after_the_receipt_key_rotates(
    stack: Stack, browser: Browser
) -> None:
    """Re-signed by a new key, the payload (and so the logged digest) does not change."""
    from broker.core.kantara import verify_receipt_jws

    consent_id = _consent_id(stack, connect(stack, browser, optional=[]))
    with stack.api(stack.auditor_key) as api:
        before = api.get(f"/v1/consents/{consent_id}/receipt", params={"format": "jws"}).text
    path = stack.rt.settings.resolved_receipt_keys_file
    ring = SigningKeyRing.load(path)
    ring.add_new_key()
    ring.save(path)
    with stack.api(stack.auditor_key) as api:
        after = api.get(f"/v1/consents/{consent_id}/receipt", params={"format": "jws"}).text
    assert before.split(".")[0] != after.split(".")[0]  # another kid
    assert before.split(".")[1] == after.split(".")[1]  # the same receipt
    logged = _granted_entry(stack, consent_id)["details"]["receipt_sha256"]
    keys = _verifiers(stack)
    assert verify_receipt_jws(before, keys)["sha256"] == logged
    assert verify_receipt_jws(after, keys)["sha256"] == logged


def test_user_downloads_own_jws_receipt_only(stack: Stack, browser: Browser) -> None:
    from broker.core.kantara import verify_receipt_jws

    mine = connect(stack, browser, optional=[], user_id="user-1")
    other_browser = Browser()
    try:
        theirs = connect(stack, other_browser, optional=[], user_id="user-2")
    finally:
        other_browser.close()
    sign_in(stack, browser, "user-1")
    page = browser.get(f"{stack.url}/me/connections/{mine}")
    assert f"/me/connections/{mine}/receipt?format=jws" in page.text
    resp = browser.get(f"{stack.url}/me/connections/{mine}/receipt?format=jws")
    assert resp.status_code == 200 and resp.headers["content-type"] == "application/jose"
    body = verify_receipt_jws(resp.text, _verifiers(stack))["receipt"]
    assert body["iso27560"]["connection_id"] == mine and body["piiPrincipalId"] == "user-1"
    assert browser.get(f"{stack.url}/me/connections/{theirs}/receipt?format=jws").status_code == 404


def _cli_env(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = stack.rt.settings
    monkeypatch.setenv("BROKER_HOME", str(settings.home))
    monkeypatch.setenv("BROKER_DATABASE_URL", settings.resolved_database_url)
    monkeypatch.setenv("BROKER_BASE_URL", settings.resolved_base_url)


def test_cli_verifies_jws_and_note_receipts_offline(
    stack: Stack, browser: Browser, tmp_path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    from broker.cli import main

    consent_id = _consent_id(stack, connect(stack, browser, optional=[NAME]))
    with stack.api(stack.auditor_key) as api:
        token = api.get(f"/v1/consents/{consent_id}/receipt", params={"format": "jws"}).text
        note = api.get(f"/v1/consents/{consent_id}/receipt").text
    _cli_env(stack, monkeypatch)
    capsys.readouterr()
    keys, jwks, log = tmp_path / "receipt-keys.txt", tmp_path / "keys.jwks", tmp_path / "log"
    assert main(["receipts", "public-key"]) == 0
    keys.write_text(capsys.readouterr().out)
    assert main(["receipts", "public-key", "--format", "jwks"]) == 0
    jwks.write_text(capsys.readouterr().out)
    assert main(["audit", "export-log", "-o", str(log)]) == 0
    capsys.readouterr()
    # from here on no database: the commands must not need one
    monkeypatch.setenv("BROKER_DATABASE_URL", "sqlite:////nonexistent/dir/broker.db")
    good, note_file = tmp_path / "consent.jws", tmp_path / "consent.note"
    good.write_text(token)
    note_file.write_text(note)
    for key in (str(keys), str(jwks)):
        assert main(["receipts", "verify", str(good), "--public-key", key]) == 0
        assert f"receipt OK: consent {consent_id} of user-1" in capsys.readouterr().out
    assert main(["receipts", "verify", str(note_file), "--public-key", str(keys)]) == 0
    assert "(signed note)" in capsys.readouterr().out
    assert (
        main(["receipts", "verify", str(good), "--public-key", str(keys), "--log", str(log)]) == 0
    )
    assert "its digest is in the log at seq" in capsys.readouterr().out
    assert main(["receipts", "verify", str(good), "--public-key", str(keys), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["ok"] is True and result["format"] == "jws"
    assert result["receipt"]["consentReceiptID"] == consent_id

    # one changed field: the signature fails
    header, payload, signature = token.split(".")
    body = json.loads(_unb64(payload))
    body["piiPrincipalId"] = "user-2"
    forged = tmp_path / "forged.jws"
    forged.write_text(f"{header}.{_b64(_canon(body))}.{signature}")
    assert main(["receipts", "verify", str(forged), "--public-key", str(keys), "--json"]) == 1
    assert "does not verify" in json.loads(capsys.readouterr().out)["problem"]
    # a genuine receipt whose digest is not in this log (another broker's log) fails --log
    other_log = tmp_path / "other-log"
    other_log.write_text(
        "\n".join(ln for ln in log.read_text().splitlines() if '"consent.granted"' not in ln)
    )
    assert (
        main(["receipts", "verify", str(good), "--public-key", str(keys), "--log", str(other_log)])
        == 1
    )
    assert "in no consent.granted entry" in capsys.readouterr().out
    # the wrong key: another ring's verifier key
    other = SigningKeyRing(name=stack.rt.receipt_keys().name)
    other.add_new_key()
    (vkey,) = [v.vkey for v in other.verifiers()]
    assert main(["receipts", "verify", str(good), "--public-key", vkey]) == 1
    assert "receipt FAILED: no known receipt key" in capsys.readouterr().out
    # the checkpoint keys never verify a JWS receipt, even listed as receipt keys
    checkpoint = [v.vkey for v in stack.rt.signing_keys().verifiers()]
    assert main(["receipts", "verify", str(good), "--public-key", checkpoint[0]]) == 1
    assert main(["receipts", "verify", str(tmp_path / "absent.jws"), "--public-key", vkey]) == 1
    assert "cannot read" in capsys.readouterr().out


def test_audit_verify_receipt_accepts_jws_and_notes(
    stack: Stack, browser: Browser, tmp_path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    from broker.cli import main

    consent_id = _consent_id(stack, connect(stack, browser, optional=[]))
    with stack.api(stack.auditor_key) as api:
        token = api.get(f"/v1/consents/{consent_id}/receipt", params={"format": "jws"}).text
        note = api.get(f"/v1/consents/{consent_id}/receipt").text
    _cli_env(stack, monkeypatch)
    capsys.readouterr()
    jws_file, note_file, bad = (tmp_path / n for n in ("c.jws", "c.note", "bad.jws"))
    jws_file.write_text(token)
    note_file.write_text(note)
    header, payload, signature = token.split(".")
    body = json.loads(_unb64(payload))
    body["sensitive"] = not body["sensitive"]
    bad.write_text(f"{header}.{_b64(_canon(body))}.{signature}")
    assert main(["audit", "verify-receipt", str(jws_file)]) == 0
    assert f"receipt OK: consent {consent_id} of user-1 (Kantara JWS)" in capsys.readouterr().out
    assert main(["audit", "verify-receipt", str(note_file)]) == 0
    assert "(signed note)" in capsys.readouterr().out
    assert main(["audit", "verify-receipt", str(jws_file), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["format"] == "jws"
    assert main(["audit", "verify-receipt", str(bad), "--json"]) == 1
    assert json.loads(capsys.readouterr().out)["ok"] is False


def _b64(raw: bytes) -> str:
    import base64

    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(part: str) -> bytes:
    import base64

    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def _canon(body: dict) -> bytes:
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def test_offline_check_refuses_a_key_retired_before_the_consent() -> None:
    """A retired receipt key signs nothing after its retirement, so it cannot have signed
    the receipt of a consent recorded later (``retired=`` in the key file)."""
    from datetime import UTC, datetime

    from broker.core.kantara import ConsentFacts, ReceiptIssuer, build_receipt, sign_receipt
    from broker.flows.receipts import check_receipt

    ring = SigningKeyRing(name="broker.example/consent-receipts")
    ring.add_new_key()
    at = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
    facts = ConsentFacts(
        consent_id="cons_x", connection_id="conn_x", user_id="u", connector_id="c",
        connector_name="C", granted_categories=["user.name"], declined_categories=[],
        purposes={"user.name": "greet"}, privacy_policy_url="https://c.example/p",
        terms_url="https://c.example/t", manifest_digest="0" * 64,
        platform_policy_version="1", scopes=[], consented_at=at, recorded_at=at,
    )  # fmt: skip
    issuer = ReceiptIssuer(
        name=ring.name, controller="P", controller_url="https://b.example",
        policy_url="https://b.example/privacy", me_url="https://b.example/me",
    )  # fmt: skip
    kid = ring.active
    token = sign_receipt(
        build_receipt(facts, issuer),
        private=ring.private[kid],
        public=ring.public[kid],
        kid=kid,
    )
    (live,) = ring.verifiers()
    assert check_receipt(token, [live])["key_id"] == kid
    before = NoteVerifier(live.name, live.public, "2026-05-01T11:59:59Z")
    with pytest.raises(InvalidInput, match="retired at 2026-05-01T11:59:59Z"):
        check_receipt(token, [before])
    after = NoteVerifier(live.name, live.public, "2026-05-01T12:00:00Z")
    assert check_receipt(token, [after])["format"] == "jws"
