"""Consent receipts are signed with their own key, not the checkpoint key; receipts signed
with the checkpoint key before the receipt key existed still verify."""

from __future__ import annotations

import json
import stat
from datetime import timedelta

import pytest
from sqlmodel import Session

from broker.cli import main
from broker.core.checkpoint import NoteVerifier, SigningKeyRing, open_note, sign_note
from broker.core.errors import InvalidInput
from broker.flows.receipts import receipt_body, verify_receipt
from broker.store.models import ConsentRecord
from tests.integration.conftest import Browser, Stack, connect


def _keys(stack: Stack, which: str | None) -> list[NoteVerifier]:
    params = {"format": "text", **({"keys": which} if which else {})}
    with stack.api(stack.auditor_key) as api:
        resp = api.get("/v1/audit/public-key", params=params)
    assert resp.status_code == 200, resp.text
    return [NoteVerifier.from_vkey(ln.split()[0]) for ln in resp.text.splitlines() if ln]


def _receipt(stack: Stack, connection_id: str) -> tuple[str, str]:
    with stack.api(stack.auditor_key) as api:
        consent_id = api.get(f"/v1/connections/{connection_id}").json()["consent_id"]
        resp = api.get(f"/v1/consents/{consent_id}/receipt")
    assert resp.status_code == 200
    return consent_id, resp.text


def _legacy_receipt(stack: Stack, consent_id: str, **changes: str) -> str:
    """A receipt as the broker signed them before: with the checkpoint key."""
    with Session(stack.rt.engine) as session:
        rec = session.get(ConsentRecord, consent_id)
    signer = stack.rt.signing_keys().signer()
    body = {**receipt_body(rec, issuer=signer.name), **changes}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False) + "\n"
    return sign_note(text, [signer])


def test_receipts_have_their_own_key(stack: Stack, browser: Browser) -> None:
    _, note = _receipt(stack, connect(stack, browser, optional=[]))
    receipt_keys, checkpoint_keys = _keys(stack, "receipts"), _keys(stack, None)
    text, good = open_note(note, receipt_keys)
    assert json.loads(text)["issuer"] == good[0].name
    assert good[0].name.endswith("/consent-receipts")
    with pytest.raises(InvalidInput, match="no signature by a known key"):
        open_note(note, checkpoint_keys)  # the checkpoint key no longer signs receipts
    assert good[0].key_id not in {k.key_id for k in checkpoint_keys}
    path = stack.rt.settings.resolved_receipt_keys_file
    assert path.name == "receipt-keys.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert verify_receipt(stack.rt, note)["legacy"] is False
    with stack.api(stack.auditor_key) as api:
        listed = api.get("/v1/audit/public-key", params={"keys": "receipts"}).json()
    assert listed["origin"] == good[0].name
    assert [k["legacy"] for k in listed["keys"]] == [False, True]  # then the old checkpoint key


def test_receipts_signed_with_the_checkpoint_key_before_still_verify(
    stack: Stack, browser: Browser
) -> None:
    consent_id, _ = _receipt(stack, connect(stack, browser, optional=[]))
    old = _legacy_receipt(stack, consent_id)
    # the broker is upgraded: its receipt key is made now, after that consent
    path = stack.rt.settings.resolved_receipt_keys_file
    path.unlink()
    SigningKeyRing.load_or_create(path, stack.rt.settings.resolved_receipt_key_name)
    result = verify_receipt(stack.rt, old)
    assert result["legacy"] is True and result["receipt"]["consent_id"] == consent_id
    text, _ = open_note(old, _keys(stack, "receipts"))  # the published list verifies it too
    assert json.loads(text)["consent_id"] == consent_id


def test_a_checkpoint_signed_receipt_of_a_later_consent_is_refused(
    stack: Stack, browser: Browser
) -> None:
    consent_id, _ = _receipt(stack, connect(stack, browser, optional=[]))
    later = (stack.rt.clock() + timedelta(hours=1)).isoformat()
    with pytest.raises(InvalidInput, match="stopped signing receipts"):
        verify_receipt(stack.rt, _legacy_receipt(stack, consent_id, recorded_at=later))
    with pytest.raises(InvalidInput, match="not a consent receipt"):
        verify_receipt(stack.rt, sign_note("hello\n", [stack.rt.receipt_keys().signer()]))


def test_cli_prints_receipt_keys_and_verifies_receipts(
    stack: Stack, browser: Browser, tmp_path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    _, note = _receipt(stack, connect(stack, browser, optional=[]))
    settings = stack.rt.settings
    monkeypatch.setenv("BROKER_HOME", str(settings.home))
    monkeypatch.setenv("BROKER_DATABASE_URL", settings.resolved_database_url)
    monkeypatch.setenv("BROKER_BASE_URL", settings.resolved_base_url)
    capsys.readouterr()
    assert main(["audit", "public-key", "--receipts"]) == 0
    printed = [
        NoteVerifier.from_vkey(ln.split()[0]) for ln in capsys.readouterr().out.split("\n") if ln
    ]
    assert printed == _keys(stack, "receipts")
    good, bad = tmp_path / "consent.note", tmp_path / "forged.note"
    good.write_text(note)
    bad.write_text(note.replace('"user-1"', '"user-2"'))
    assert main(["audit", "verify-receipt", str(good)]) == 0
    assert "receipt OK" in capsys.readouterr().out
    assert main(["audit", "verify-receipt", str(bad)]) == 1
    assert "receipt FAILED" in capsys.readouterr().out
