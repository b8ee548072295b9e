"""Share only what was granted, log every transfer, revoke for real."""

from __future__ import annotations

import hashlib
import json
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlmodel import Session, select

from broker.core.audit_chain import read_head
from broker.core.pseudonyms import salted_digest
from broker.flows.audit import verify_log
from broker.store.models import AuditRow, ConnectionToken, Transfer
from tests.integration.conftest import Browser, Stack, connect

NAME = "user.name"
EMAIL = "user.contact.email"
WORK_ITEMS = "user.content.work_items"

PAYLOAD = {
    "work_item": {
        "id": "W-42",
        "title": "Fix login",
        "assignee": {"name": "Ada", "email": "ada@example.com"},
    },
    "author": {"name": "Bob"},
}


@pytest.fixture
def connected(stack: Stack, browser: Browser) -> str:
    """A connection that granted work items and name, and declined email."""
    return connect(stack, browser, optional=[NAME])


def transfer(stack: Stack, connection_id: str, **body: object):
    body.setdefault("action", "post_message")
    body.setdefault("data", PAYLOAD)
    with stack.api() as api:
        return api.post(f"/v1/connections/{connection_id}/transfers", json=body)


def events(stack: Stack) -> list[AuditRow]:
    with Session(stack.rt.engine) as db:
        return list(db.exec(select(AuditRow).order_by(AuditRow.seq)).all())


def test_field_of_declined_category_is_refused(stack: Stack, connected: str) -> None:
    resp = transfer(stack, connected)
    assert resp.status_code == 403
    error = resp.json()["error"]
    assert error["code"] == "outside_grant"
    assert error["details"]["fields"] == [{"path": "work_item.assignee.email", "category": EMAIL}]
    assert stack.provider.received == []
    last = events(stack)[-1]
    assert last.event == "transfer.blocked"
    assert last.transfer_id == error["details"]["transfer_id"]
    assert "work_item.assignee.email" in last.field_paths
    assert verify_log(stack.rt).ok


def test_drop_mode_delivers_exactly_the_granted_fields(stack: Stack, connected: str) -> None:
    resp = transfer(stack, connected, mode="drop")
    assert resp.status_code == 201, resp.text
    body = resp.json()
    assert body["status"] == "delivered"
    assert body["dropped"] == [{"path": "work_item.assignee.email", "category": EMAIL}]
    (received,) = stack.provider.received
    expected = {
        "work_item": {"id": "W-42", "title": "Fix login", "assignee": {"name": "Ada"}},
        "author": {"name": "Bob"},
    }
    assert received.body == expected
    assert "ada@example.com" not in json.dumps(received.body)


def test_transfer_within_grant_is_delivered_and_logged(stack: Stack, connected: str) -> None:
    data = {"work_item": {"id": "W-1", "title": "Ship it"}, "author": {"name": "Bob"}}
    resp = transfer(stack, connected, data=data, idempotency_key="k-1")
    assert resp.status_code == 201, resp.text
    t = resp.json()
    (received,) = stack.provider.received
    sent = json.dumps(received.body, separators=(",", ":"), ensure_ascii=False).encode()
    with Session(stack.rt.engine) as db:  # log format 2: salted with the transfer's salt
        salt = db.get(Transfer, t["id"]).payload_salt
    assert t["payload_sha256"] == salted_digest(salt, sent) != hashlib.sha256(sent).hexdigest()
    assert t["payload_bytes"] == len(sent)
    assert t["categories"] == [WORK_ITEMS, NAME] or t["categories"] == sorted([WORK_ITEMS, NAME])
    assert t["field_paths"] == ["author.name", "work_item.id", "work_item.title"]
    assert t["legal_basis"] == "consent" and t["consent_id"]
    assert t["response_id"] == received.id
    kinds = [e.event for e in events(stack) if e.transfer_id == t["id"]]
    assert kinds == ["transfer.pending", "transfer.delivered"]
    delivered = events(stack)[-1]
    assert delivered.payload_sha256 == t["payload_sha256"]
    assert delivered.categories == sorted([WORK_ITEMS, NAME])
    assert delivered.destination.endswith("/api/post_message")
    # the same idempotency key never delivers twice
    again = transfer(stack, connected, data=data, idempotency_key="k-1")
    assert again.status_code == 200
    assert again.json()["id"] == t["id"]
    assert len(stack.provider.received) == 1
    clash = transfer(stack, connected, data={"work_item": {"id": "X"}}, idempotency_key="k-1")
    assert clash.status_code == 409
    assert verify_log(stack.rt).ok


def test_blocked_request_does_not_take_its_idempotency_key(stack: Stack, connected: str) -> None:
    blocked = transfer(stack, connected, idempotency_key="k-9")
    assert blocked.status_code == 403
    fixed = transfer(stack, connected, mode="drop", idempotency_key="k-9")
    assert fixed.status_code == 201, fixed.text
    assert len(stack.provider.received) == 1
    blocked_event = next(e for e in events(stack) if e.event == "transfer.blocked")
    assert blocked_event.details["idempotency_key"] == "k-9"


def test_undeclared_purpose_is_refused(stack: Stack, connected: str) -> None:
    data = {"work_item": {"id": "W-1"}}
    resp = transfer(stack, connected, data=data, purpose="Sell to advertisers")
    assert resp.status_code == 403
    assert resp.json()["error"]["code"] == "purpose_not_declared"
    assert stack.provider.received == []
    ok = transfer(
        stack, connected, data=data, purpose="Post work item updates to your team channel"
    )
    assert ok.status_code == 201


def _expire_tokens(stack: Stack, connection_id: str) -> None:
    from datetime import UTC, datetime, timedelta

    with Session(stack.rt.engine) as db:
        row = db.get(ConnectionToken, connection_id)
        row.expires_at = datetime.now(UTC) - timedelta(minutes=1)
        db.add(row)
        db.commit()
    stack.provider.expire_access_tokens()


def test_expired_token_refreshes_once_for_20_concurrent_transfers(
    stack: Stack, connected: str
) -> None:
    with Session(stack.rt.engine) as db:
        before = db.get(ConnectionToken, connected)
    old_refresh = stack.rt.vault.open(
        before.refresh_token, connection_id=connected, kind="refresh_token"
    )
    _expire_tokens(stack, connected)
    data = {"work_item": {"id": "W-1"}}
    with ThreadPoolExecutor(max_workers=20) as pool:
        results = list(pool.map(lambda _: transfer(stack, connected, data=data), range(20)))
    assert [r.status_code for r in results] == [201] * 20
    assert stack.provider.token_requests.count("refresh_token") == 1
    assert len(stack.provider.received) == 20
    with Session(stack.rt.engine) as db:
        after = db.get(ConnectionToken, connected)
    new_refresh = stack.rt.vault.open(
        after.refresh_token, connection_id=connected, kind="refresh_token"
    )
    assert new_refresh != old_refresh  # the rotated refresh token was kept
    assert stack.provider.is_active(new_refresh)
    assert not stack.provider.is_active(old_refresh)
    assert [e.event for e in events(stack)].count("token.refreshed") == 1


def test_401_triggers_one_refresh_and_retry(stack: Stack, connected: str) -> None:
    stack.provider.expire_access_tokens()  # the broker still thinks the token is fresh
    resp = transfer(stack, connected, data={"work_item": {"id": "W-1"}})
    assert resp.status_code == 201, resp.text
    assert stack.provider.token_requests.count("refresh_token") == 1
    attempts = resp.json()["attempts"]
    assert [a.get("status") for a in attempts] == [401, 201]


def test_429_and_503_are_retried_honouring_retry_after(stack: Stack, connected: str) -> None:
    stack.provider.fail_api(429, headers={"Retry-After": "7"})
    stack.provider.fail_api(503)
    resp = transfer(stack, connected, data={"work_item": {"id": "W-1"}})
    assert resp.status_code == 201, resp.text
    attempts = resp.json()["attempts"]
    assert [a.get("status") for a in attempts] == [429, 503, 201]
    assert attempts[0]["retry_after"] == 7
    assert stack.waits[0] == 7
    assert 0 <= stack.waits[1] <= stack.rt.settings.delivery_backoff_base * 2
    assert len(stack.provider.received) == 1


def test_permanent_failure_ends_failed_with_attempts(stack: Stack, connected: str) -> None:
    stack.provider.fail_api(503, count=10)
    resp = transfer(stack, connected, data={"work_item": {"id": "W-1"}})
    assert resp.status_code == 502
    error = resp.json()["error"]
    assert error["code"] == "delivery_failed"
    failed = error["details"]["transfer"]
    assert failed["status"] == "failed"
    assert len(failed["attempts"]) == stack.rt.settings.delivery_max_attempts
    assert "503" in failed["reason"]
    assert events(stack)[-1].event == "transfer.failed"
    assert stack.provider.received == []


def test_revoke_calls_provider_and_blocks_later_transfers(stack: Stack, connected: str) -> None:
    with Session(stack.rt.engine) as db:
        row = db.get(ConnectionToken, connected)
    refresh = stack.rt.vault.open(row.refresh_token, connection_id=connected, kind="refresh_token")
    with stack.api() as api:
        resp = api.delete(f"/v1/connections/{connected}")
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["connection"]["status"] == "revoked"
    assert body["provider_revocation"]["refresh_token"] == "revoked"
    assert "refresh_token" in stack.provider.revoked
    assert not stack.provider.is_active(refresh)
    with Session(stack.rt.engine) as db:
        assert db.get(ConnectionToken, connected) is None
    kinds = [e.event for e in events(stack)]
    assert "consent.withdrawn" in kinds and "connection.revoked" in kinds
    later = transfer(stack, connected, data={"work_item": {"id": "W-1"}})
    assert later.status_code == 409
    assert later.json()["error"]["code"] == "connection_not_active"
    assert events(stack)[-1].event == "transfer.blocked"
    assert stack.provider.received == []


def test_revoke_when_provider_fails_still_destroys_tokens(stack: Stack, connected: str) -> None:
    stack.provider.fail_revocation(503, count=2)
    with stack.api() as api:
        resp = api.delete(f"/v1/connections/{connected}")
    body = resp.json()
    assert body["connection"]["status"] == "revoked"
    assert body["provider_revocation"]["refresh_token"].startswith("failed")
    with Session(stack.rt.engine) as db:
        assert db.get(ConnectionToken, connected) is None
    revoked = [e for e in events(stack) if e.event == "connection.revoked"][-1]
    assert revoked.outcome == "provider_revocation_failed"


def test_list_filter_page_and_recipients(stack: Stack, connected: str) -> None:
    for i in range(5):
        assert transfer(stack, connected, data={"work_item": {"id": f"W-{i}"}}).status_code == 201
    assert transfer(stack, connected).status_code == 403  # one blocked
    with stack.api(stack.auditor_key) as api:
        page1 = api.get("/v1/transfers", params={"limit": 2, "status": "delivered"}).json()
        page2 = api.get(
            "/v1/transfers",
            params={"limit": 2, "status": "delivered", "cursor": page1["next_cursor"]},
        ).json()
        page3 = api.get(
            "/v1/transfers",
            params={"limit": 2, "status": "delivered", "cursor": page2["next_cursor"]},
        ).json()
        blocked = api.get("/v1/transfers", params={"status": "blocked"}).json()["transfers"]
        by_email = api.get("/v1/transfers", params={"category": EMAIL}).json()["transfers"]
        recipients = api.get("/v1/audit/recipients").json()["recipients"]
        verify = api.get("/v1/audit/verify").json()
    ids = [t["id"] for p in (page1, page2, page3) for t in p["transfers"]]
    assert len(ids) == 5 and len(set(ids)) == 5
    assert page3["next_cursor"] is None
    assert len(blocked) == 1 and by_email == blocked
    (sandbox,) = recipients
    assert sandbox["connector"] == "sandbox"
    assert sandbox["transfers"] == 5 and sandbox["blocked"] == 1
    assert sandbox["categories"] == [WORK_ITEMS]
    assert sandbox["field_paths"] == ["work_item.id"]
    assert verify["ok"] is True
    head = read_head(stack.rt.settings.audit_head_file)
    assert head is not None and head.seq == verify["chain_head"]["seq"]


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b"{not json", 422, "invalid_input"),
        (b'{"action": "post_message", "data": [1, 2]}', 422, "invalid_input"),
        (b'{"action": "nope", "data": {}}', 422, "invalid_input"),
        (b'{"action": "post_message", "data": {}, "mode": "maybe"}', 422, "invalid_input"),
        (b'{"action": "post_message", "data": {"x": NaN}}', 422, "invalid_input"),
    ],
)
def test_bad_transfer_requests(
    stack: Stack, connected: str, body: bytes, status: int, code: str
) -> None:
    before = len(events(stack))
    with stack.api() as api:
        resp = api.post(
            f"/v1/connections/{connected}/transfers",
            content=body,
            headers={"Content-Type": "application/json"},
        )
    assert resp.status_code == status, resp.text
    assert resp.json()["error"]["code"] == code
    assert "Traceback" not in resp.text
    assert len(events(stack)) == before
    assert verify_log(stack.rt).ok


def test_oversized_payload_and_auth(stack: Stack, connected: str) -> None:
    big = {"action": "post_message", "data": {"work_item": {"title": "x" * 10_000_000}}}
    with stack.api() as api:
        resp = api.post(f"/v1/connections/{connected}/transfers", json=big)
        unknown = api.post("/v1/connections/conn_nope/transfers", json={"action": "a", "data": {}})
    assert resp.status_code == 413
    assert resp.json()["error"]["details"]["limit_bytes"] == stack.rt.settings.max_payload_bytes
    assert unknown.status_code == 404
    with stack.api("brk_wrong") as api:
        assert api.get("/v1/transfers").status_code == 401
    with stack.api(stack.auditor_key) as api:
        denied = api.post(
            f"/v1/connections/{connected}/transfers", json={"action": "post_message", "data": {}}
        )
    assert denied.status_code == 403
    with Session(stack.rt.engine) as db:
        assert db.exec(select(Transfer)).all() == []
    assert verify_log(stack.rt).ok
