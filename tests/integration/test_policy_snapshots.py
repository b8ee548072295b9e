"""Policy snapshots, terms versions and change detection, against the sandbox over
real sockets: what the consent page showed is kept by digest, every transfer names its
terms version, and a change of the third party's text or manifest is caught."""

from __future__ import annotations

import copy
import json
import os
import threading
from pathlib import Path

import httpx
import pytest
from sqlmodel import Session, col, select

from broker.cli import main
from broker.core.catalog import default_catalog
from broker.core.connector import Connector, ConnectorSource
from broker.core.manifest import parse_manifest
from broker.core.policy_text import digest, normalise_html
from broker.demo import sandbox_manifest
from broker.flows.audit import verify_log
from broker.flows.policy_checks import check_policies, start_policy_checks
from broker.flows.policy_snapshots import fetch_page
from broker.flows.terms import classify_change, current_terms_version
from broker.runtime import build_runtime
from broker.store.models import AuditRow, Connection, ConsentRecord, Transfer
from broker.store.policy_models import PolicyChange, PolicyCheck, PolicySnapshot, TermsVersion
from broker.store.webhook_models import WebhookDelivery
from tests.integration.conftest import Browser, Stack, connect

NAME = "user.name"
POLICY = (
    "<p>Sandbox Co. keeps what it receives in memory only.</p>"
    "<p>It shows it on the demo page and forgets it on restart.</p>"
    + "".join(f"<p>Clause {i}: nothing here is shared with anyone else.</p>" for i in range(30))
)


def served_digest(stack: Stack, page: str) -> str:
    """The digest of the page's text, computed here from what the sandbox serves."""
    html = httpx.get(f"{stack.sandbox.url}/{page}", timeout=5).text
    return digest(normalise_html(html))


def events(stack: Stack, event: str) -> list[AuditRow]:
    with Session(stack.rt.engine) as db:
        query = select(AuditRow).where(AuditRow.event == event).order_by(col(AuditRow.seq))
        return list(db.exec(query).all())


def checks(stack: Stack) -> list[PolicyCheck]:
    with Session(stack.rt.engine) as db:
        return list(db.exec(select(PolicyCheck).order_by(col(PolicyCheck.id))).all())


def test_consent_record_holds_the_digests_shown_and_the_terms_version(
    stack: Stack, browser: Browser
) -> None:
    session = stack.connect_session()
    page, _ = browser.open_consent(session["url"])
    assert page.status_code == 200
    assert "last read these pages on" in page.text
    assert "could not be retrieved" not in page.text
    conn_id = connect(stack, browser, optional=[NAME])
    with Session(stack.rt.engine) as db:
        record = db.exec(select(ConsentRecord).where(ConsentRecord.connection_id == conn_id)).one()
        snapshots = {s.digest: s for s in db.exec(select(PolicySnapshot)).all()}
        version = db.get(TermsVersion, record.terms_version)
    privacy, terms = served_digest(stack, "privacy"), served_digest(stack, "terms")
    assert record.policy_digests == {
        "privacy_policy": f"sha256:{privacy}",
        "terms": f"sha256:{terms}",
    }
    assert set(snapshots) == {privacy, terms}
    assert snapshots[privacy].url == f"{stack.sandbox.url}/privacy"
    assert snapshots[privacy].http_status == 200
    assert snapshots[privacy].etag == '"privacy-v1"'
    assert "forgets it on restart" in snapshots[privacy].text
    assert version is not None and version.terms["digests"] == {
        "privacy_policy": privacy,
        "terms": terms,
    }
    assert record.terms_version == current_terms_version(stack.rt, "sandbox", fresh=True)
    with stack.api() as api:
        shown = api.get(f"/v1/connections/{conn_id}/consents").json()
    assert json.dumps(shown).count(f"sha256:{privacy}") == 1


def test_a_page_not_retrieved_is_recorded_as_such(stack: Stack, browser: Browser) -> None:
    stack.provider.fail_policy("terms", 500)
    session = stack.connect_session()
    page, _ = browser.open_consent(session["url"])
    assert page.status_code == 200
    assert "the terms could not be retrieved then" in page.text
    conn_id = connect(stack, browser, optional=[], user_id="user-1")
    with Session(stack.rt.engine) as db:
        record = db.exec(select(ConsentRecord).where(ConsentRecord.connection_id == conn_id)).one()
    assert record.policy_digests is not None
    assert record.policy_digests["terms"] == "not retrieved"
    assert record.policy_digests["privacy_policy"].startswith("sha256:")
    (failed,) = [c for c in checks(stack) if c.page == "terms"]
    assert failed.outcome == "not retrieved" and failed.digest is None
    assert failed.http_status == 500 and "answered 500" in (failed.error or "")


def test_every_transfer_records_its_terms_version(stack: Stack, browser: Browser) -> None:
    stack.provider.set_policy("privacy", POLICY)
    conn_id = connect(stack, browser, optional=[NAME])
    body = {"action": "post_message", "data": {"work_item": {"id": "W-1", "title": "Ship"}}}
    with stack.api() as api:
        first = api.post(f"/v1/connections/{conn_id}/transfers", json=body)
        assert first.status_code == 201, first.text
        before = current_terms_version(stack.rt, "sandbox", fresh=True)
        stack.provider.set_policy("privacy", POLICY.replace("Clause 3:", "Clause three:"))
        (outcome,) = check_policies(stack.rt, actor="test")
        assert outcome.change is not None and outcome.change.classification == "minor"
        second = api.post(f"/v1/connections/{conn_id}/transfers", json=body)
        assert second.status_code == 201, second.text
    with Session(stack.rt.engine) as db:
        t1 = db.get(Transfer, first.json()["id"])
        t2 = db.get(Transfer, second.json()["id"])
        record = db.exec(select(ConsentRecord).where(ConsentRecord.connection_id == conn_id)).one()
    assert t1 is not None and t2 is not None
    assert t1.terms_version == before == record.terms_version
    assert t2.terms_version == outcome.terms_version != before
    assert connection_status(stack, conn_id) == "active"  # a minor change pauses nothing


def connection_status(stack: Stack, conn_id: str) -> str:
    with Session(stack.rt.engine) as db:
        conn = db.get(Connection, conn_id)
    assert conn is not None
    return conn.status


def test_significant_change_pauses_sharing_until_classified_minor(
    stack: Stack, browser: Browser
) -> None:
    stack.provider.set_policy("privacy", POLICY)
    conn_id = connect(stack, browser, optional=[NAME])
    other = connect(stack, browser, optional=[], user_id="user-2")
    body = {"action": "post_message", "data": {"work_item": {"id": "W-1", "title": "Ship"}}}
    with stack.api() as api:  # the host subscribes to re-consent notices
        hook = api.post(
            "/v1/webhook-endpoints",
            json={"url": "http://127.0.0.1:9/hooks", "events": ["connection.reconsent_required"]},
        )
        assert hook.status_code == 201, hook.text
    stack.provider.set_policy("privacy", "<p>We now sell everything you send us.</p>")
    (outcome,) = check_policies(stack.rt, actor="test")
    change = outcome.change
    assert change is not None and change.classification == "significant"
    assert sorted(change.paused) == sorted([conn_id, other])
    assert connection_status(stack, conn_id) == "reconsent_required"
    (event,) = events(stack, "policy.changed")
    assert event.details["paused_connections"] == 2
    with Session(stack.rt.engine) as db:  # recorded with the pause, one per connection
        told = db.exec(
            select(WebhookDelivery).where(
                WebhookDelivery.event_type == "connection.reconsent_required"
            )
        ).all()
    assert sorted(d.payload["connection_id"] for d in told) == sorted([conn_id, other])
    with stack.api() as api:
        blocked = api.post(f"/v1/connections/{conn_id}/transfers", json=body)
        assert blocked.status_code == 409, blocked.text
        assert stack.provider.received == []  # nothing was sent
        with Session(stack.rt.engine) as db:
            row = db.get(Transfer, blocked.json()["error"]["details"]["transfer_id"])
        assert row is not None and row.status == "blocked"
        assert row.reason == "terms changed; re-consent required"
        assert row.terms_version == outcome.terms_version
        classify_change(stack.rt, change.id, "minor", reason="only reformatted", actor="test")
        assert connection_status(stack, conn_id) == "active"
        delivered = api.post(f"/v1/connections/{conn_id}/transfers", json=body)
        assert delivered.status_code == 201, delivered.text
        assert len(stack.provider.received) == 1
    (classified,) = events(stack, "policy.classified")
    assert classified.details["resumed_connections"] == 2
    # made significant again: paused again
    classify_change(stack.rt, change.id, "significant", reason="it is a sale", actor="test")
    assert connection_status(stack, other) == "reconsent_required"
    assert verify_log(stack.rt).ok


def test_changed_policy_text_is_a_policy_changed_event_with_both_digests(stack: Stack) -> None:
    stack.provider.set_policy("privacy", POLICY)
    check_policies(stack.rt, actor="test")  # first retrieval: no change of terms
    assert events(stack, "policy.changed") == []
    before = served_digest(stack, "privacy")
    stack.provider.set_policy(
        "privacy", POLICY.replace("nothing here is shared", "everything is sold to brokers")
    )
    (outcome,) = check_policies(stack.rt, actor="test")
    after = served_digest(stack, "privacy")
    assert before != after
    (event,) = events(stack, "policy.changed")
    assert event.connector_id == "sandbox" and event.outcome == "significant"
    details = event.details
    assert details["before"]["digests"]["privacy_policy"] == f"sha256:{before}"
    assert details["after"]["digests"]["privacy_policy"] == f"sha256:{after}"
    assert details["before"]["digests"]["terms"] == details["after"]["digests"]["terms"]
    assert details["after"]["terms_version"] == outcome.terms_version
    assert [c["code"] for c in details["changes"]] == ["text_changed"]
    assert outcome.change is not None and details["change_id"] == outcome.change.id
    assert verify_log(stack.rt).ok


def test_markup_and_whitespace_only_changes_record_nothing(stack: Stack) -> None:
    stack.provider.set_policy("privacy", POLICY)
    (first,) = check_policies(stack.rt, actor="test")
    restyled = POLICY.replace("<p>", '<div class="clause">\n   <span>').replace(
        "</p>", "</span>\n</div><script>banner()</script>"
    )
    stack.provider.set_policy("privacy", restyled.replace(" it ", "   it\n"))
    (second,) = check_policies(stack.rt, actor="test")
    assert second.change is None
    assert second.terms_version == first.terms_version
    assert second.checks["privacy_policy"].digest == first.checks["privacy_policy"].digest
    assert events(stack, "policy.changed") == []
    # a one-word fix is a change, but a minor one
    stack.provider.set_policy("privacy", POLICY.replace("Clause 3:", "Clause three:"))
    (third,) = check_policies(stack.rt, actor="test")
    assert third.change is not None and third.change.classification == "minor"
    (event,) = events(stack, "policy.changed")
    assert event.outcome == "minor"


@pytest.mark.parametrize("failure", ["timeout", "500", "redirect", "oversized"])
def test_fetch_failures_are_not_retrieved_and_keep_the_terms(stack: Stack, failure: str) -> None:
    (first,) = check_policies(stack.rt, actor="test")
    settings = stack.rt.settings
    gate = threading.Event()
    if failure == "timeout":
        settings.policy_fetch_timeout = 0.3
        stack.provider.policy_gate = gate
    elif failure == "500":
        stack.provider.fail_policy("privacy", 500)
    elif failure == "redirect":
        stack.provider.fail_policy(
            "privacy", 302, headers={"Location": "https://elsewhere.example/p"}
        )
    else:
        settings.policy_max_bytes = 4096
        stack.provider.set_policy("privacy", "<p>" + "word " * 2000 + "</p>")
    try:
        (outcome,) = check_policies(stack.rt, actor="test")
    finally:
        gate.set()
    row = outcome.checks["privacy_policy"]
    assert row.outcome == "not retrieved" and row.digest is None
    expected = {
        "timeout": "timed out",
        "500": "answered 500",
        "redirect": "another host (elsewhere.example)",
        "oversized": "larger than 4096 bytes",
    }[failure]
    assert expected in (row.error or "")
    assert outcome.change is None and outcome.terms_version == first.terms_version
    assert events(stack, "policy.changed") == []


def test_redirect_within_the_declared_host_is_followed(stack: Stack) -> None:
    stack.provider.fail_policy("privacy", 301, headers={"Location": "/terms"})
    (outcome,) = check_policies(stack.rt, actor="test")
    assert outcome.checks["privacy_policy"].digest == served_digest(stack, "terms")


def test_fetch_refuses_plain_http_to_a_public_host_and_private_addresses(stack: Stack) -> None:
    assert stack.rt.transport is not None
    http = fetch_page(stack.rt.transport, "http://example.com/privacy", timeout=2, max_bytes=1024)
    assert http.outcome == "not retrieved" and "only https" in (http.error or "")
    private = fetch_page(stack.rt.transport, "https://10.0.0.1/privacy", timeout=2, max_bytes=1024)
    assert private.outcome == "not retrieved" and "refused" in (private.error or "")


def test_unchanged_page_is_asked_for_with_its_etag(stack: Stack) -> None:
    (first,) = check_policies(stack.rt, actor="test")
    (second,) = check_policies(stack.rt, actor="test")
    row = second.checks["privacy_policy"]
    assert row.http_status == 304 and row.digest == first.checks["privacy_policy"].digest


def _reloaded(stack: Stack, change) -> PolicyChange | None:
    raw = copy.deepcopy(sandbox_manifest(stack.sandbox.url))
    change(raw)
    manifest = parse_manifest(raw, default_catalog(), source="test")
    connector = Connector(manifest, ConnectorSource("builtin", "test"))
    rt = build_runtime(stack.rt.settings, builtins=[connector], plugins=[], upgrade=True)
    rt.close()
    with Session(stack.rt.engine) as db:
        return db.exec(select(PolicyChange).order_by(col(PolicyChange.detected_at).desc())).first()


def test_manifest_changes_are_detected_at_load(stack: Stack, browser: Browser) -> None:
    conn_id = connect(stack, browser, optional=[])

    def drop_optional(raw: dict) -> None:
        raw["data"] = [d for d in raw["data"] if d["category"] != "user.contact.email"]

    minor = _reloaded(stack, drop_optional)
    assert minor is not None and minor.classification == "minor"
    assert minor.detected_by == "broker:load" and minor.paused == []
    assert {c["code"] for c in minor.changes} == {"category_removed"}
    assert connection_status(stack, conn_id) == "active"

    def add_required(raw: dict) -> None:
        drop_optional(raw)
        raw["data"].append({"category": "user.contact.phone_number", "purpose": "Call you"})

    change = _reloaded(stack, add_required)
    assert change is not None and change.id != minor.id
    assert change.classification == "significant"
    assert [c["code"] for c in change.changes] == ["category_added"]
    assert change.paused == [conn_id]
    assert connection_status(stack, conn_id) == "reconsent_required"
    assert [e.outcome for e in events(stack, "policy.changed")] == ["minor", "significant"]
    assert events(stack, "policy.changed")[-1].details["change_id"] == change.id


CLI_MANIFEST = """
id = "policydemo"
name = "Policy Demo"
privacy_policy_url = "{sandbox}/privacy"
terms_url = "{sandbox}/terms"
[oauth]
authorize_url = "{sandbox}/oauth/authorize"
token_url = "{sandbox}/oauth/token"
client_id = "env:POLICYDEMO_ID"
client_secret = "env:POLICYDEMO_SECRET"
[[data]]
category = "user.content.work_items"
purpose = "Post work item updates to a channel"
[[actions]]
name = "post_message"
url = "{sandbox}/api/post_message"
"""


def test_cli_check_and_classify(
    stack: Stack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    for name in list(os.environ):
        if name.startswith("BROKER_"):
            monkeypatch.delenv(name)
    connectors = tmp_path / "connectors"
    connectors.mkdir()
    (connectors / "policydemo.toml").write_text(CLI_MANIFEST.format(sandbox=stack.sandbox.url))
    monkeypatch.setenv("BROKER_HOME", str(stack.rt.settings.home))
    monkeypatch.setenv("BROKER_DATABASE_URL", str(stack.rt.settings.database_url))
    monkeypatch.setenv("BROKER_CONNECTORS_PATH", str(connectors))
    assert main(["policies", "check", "--connector", "policydemo", "--json"]) == 0
    (first,) = json.loads(capsys.readouterr().out)
    assert first["connector"] == "policydemo" and first["change"] is None
    assert first["pages"]["privacy_policy"]["digest"] == served_digest(stack, "privacy")
    stack.provider.set_policy("terms", "Everything you send is kept forever and resold.")
    assert main(["policies", "check", "--connector", "policydemo"]) == 0
    out = capsys.readouterr().out
    assert "significant change pchg_" in out and "the terms text changed" in out
    (event,) = events(stack, "policy.changed")
    assert event.connector_id == "policydemo"
    assert event.details["after"]["digests"]["terms"] == f"sha256:{served_digest(stack, 'terms')}"
    change_id = event.details["change_id"]
    assert main(["policies", "classify", change_id, "minor", "--reason", "only a demo"]) == 0
    assert f"{change_id} is now minor" in capsys.readouterr().out
    (classified,) = events(stack, "policy.classified")
    assert classified.actor == "cli" and classified.outcome == "minor"
    assert classified.details == {
        "change_id": change_id,
        "was": "significant",
        "reason": "only a demo",
        "paused_connections": 0,
        "resumed_connections": 0,
    }
    with Session(stack.rt.engine) as db:
        stored = db.get(PolicyChange, change_id)
    assert stored is not None and stored.classification == "minor"
    assert stored.classified_reason == "only a demo"
    assert main(["policies", "classify", "pchg_nope", "minor", "--reason", "x y z"]) == 1
    assert main(["policies", "classify", change_id, "minor", "--reason", ""]) == 1
    assert verify_log(stack.rt).ok


def test_serve_checks_due_pages_periodically(stack: Stack) -> None:
    timer = start_policy_checks(stack.rt)
    assert timer is not None
    try:
        assert timer.round_done.wait(10)
    finally:
        timer.stop()
    rows = checks(stack)
    assert {(r.page, r.outcome) for r in rows} == {
        ("privacy_policy", "retrieved"),
        ("terms", "retrieved"),
    }
    with Session(stack.rt.engine) as db:
        version = db.exec(select(TermsVersion).where(TermsVersion.connector_id == "sandbox")).all()
    assert any(v.terms["digests"]["terms"] == served_digest(stack, "terms") for v in version)
    stack.rt.settings.policy_check_interval = 0
    assert start_policy_checks(stack.rt) is None
