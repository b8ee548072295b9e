"""Webhooks to the host over real sockets: Standard Webhooks signatures, durable
deliveries written with their audit entries, ordered per connection, retried on the
documented schedule (a fake clock, no sleeping), endpoints disabled after a run of
failures, a restart mid-retry, and nothing secret or private in any message."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlalchemy import event, select
from sqlmodel import Session

from broker.core.webhooks import EVENT_TYPES, RETRY_DELAYS
from broker.flows.keys import create_api_key
from broker.flows.webhooks import WebhookSender
from broker.flows.workers import ensure_workers
from broker.runtime import Runtime, build_runtime
from broker.settings import Settings
from broker.store.audit import append_event
from broker.store.db import session_scope
from broker.store.webhook_jobs import claim_due
from broker.store.webhook_models import WebhookDelivery, WebhookEndpoint
from broker.store.webhook_outbox import enqueue
from broker.web.app import create_app
from tests.conftest import LiveServer, free_socket
from tests.integration.conftest import Browser, Stack, connect
from tests.integration.webhook_receiver import Hook, HookReceiver

NAME = "user.name"
ALLOWED_DATA_KEYS = {
    "user_id",
    "connector_id",
    "connection_id",
    "transfer_id",
    "consent_id",
    "audit_seq",
    "categories",
    "status",
    "links",
}


@pytest.fixture
def hooks() -> Iterator[HookReceiver]:
    receiver = HookReceiver().start()
    yield receiver
    receiver.stop()


def register(api: httpx.Client, url: str, events: list[str] | None = None) -> dict:
    resp = api.post(
        "/v1/webhook-endpoints",
        json={"url": url, "events": events or list(EVENT_TYPES), "description": "host"},
    )
    assert resp.status_code == 201, resp.text
    body = resp.json()
    assert body["secret"].startswith("whsec_")
    assert resp.headers["location"] == f"/v1/webhook-endpoints/{body['id']}"
    return body


def deliveries(rt: Runtime, endpoint_id: str) -> list[WebhookDelivery]:
    with Session(rt.engine) as db:
        stmt = select(WebhookDelivery).where(WebhookDelivery.endpoint_id == endpoint_id)
        return list(db.execute(stmt).scalars().all())


def assert_private(hook: Hook, *secrets: str) -> None:
    """No secret, token or transfer data: only ids, categories, status and links."""
    for secret in secrets:
        assert secret not in hook.body
        assert secret.removeprefix("whsec_") not in hook.body
    body = json.loads(hook.body)
    assert set(body) == {"type", "timestamp", "data"}
    assert set(body["data"]) <= ALLOWED_DATA_KEYS, body["data"]
    assert "token" not in hook.body.lower()


# -- the whole flow, through the sender thread -------------------------------------------


def test_connect_share_revoke_send_each_event_once_in_order(
    stack: Stack, browser: Browser, hooks: HookReceiver
) -> None:
    ensure_workers(stack.rt)  # as `broker serve` does on start
    with stack.api() as api:
        endpoint = register(api, hooks.url)
    secret = endpoint["secret"]
    conn_id = connect(stack, browser, optional=[NAME])
    with stack.api() as api:
        data = {"work_item": {"id": "W-1", "title": "Ship it"}, "author": {"name": "Bobbity"}}
        ok = api.post(
            f"/v1/connections/{conn_id}/transfers", json={"action": "post_message", "data": data}
        )
        assert ok.status_code == 201, ok.text
        stack.provider.fail_api(400)
        failed = api.post(
            f"/v1/connections/{conn_id}/transfers", json={"action": "post_message", "data": data}
        )
        assert failed.status_code == 502, failed.text
        outside = {"work_item": {"id": "W-2", "assignee": {"email": "ada@example.com"}}}
        blocked = api.post(
            f"/v1/connections/{conn_id}/transfers",
            json={"action": "post_message", "data": outside},
        )
        assert blocked.status_code == 403, blocked.text
        assert api.delete(f"/v1/connections/{conn_id}").status_code == 200
    expected = [
        "connection.created",
        "consent.granted",
        "connection.activated",
        "transfer.delivered",
        "transfer.failed",
        "transfer.blocked",
        "consent.withdrawn",
        "connection.revoked",
    ]
    got = hooks.wait_for(len(expected))
    # in the order they happened (one at a time per connection), each once
    assert [json.loads(h.body)["type"] for h in got] == expected
    assert len({h.id for h in got}) == len(expected)
    for hook in got:
        body = hook.verify(secret)  # Standard Webhooks signature, timestamp in tolerance
        assert hook.headers["webhook-signature"].startswith("v1,")
        assert body["data"]["connection_id"] == conn_id
        assert body["data"]["links"]["connection"] == f"{stack.url}/v1/connections/{conn_id}"
        assert_private(hook, secret)
        for private in ("Ship it", "Bobbity", "ada@example.com"):
            assert private not in hook.body
    transfers = [json.loads(h.body)["data"] for h in got[3:6]]
    assert [t["status"] for t in transfers] == ["delivered", "failed", "blocked"]
    assert transfers[0]["transfer_id"] == ok.json()["id"]
    assert transfers[0]["categories"]  # what was sent, by category
    # the log agrees, and never shows the secret
    with stack.api() as api:
        log = api.get(f"/v1/webhook-endpoints/{endpoint['id']}/deliveries").json()
        shown = api.get(f"/v1/webhook-endpoints/{endpoint['id']}")
    assert shown.status_code == 200 and "secret" not in shown.json()
    assert secret not in shown.text and secret not in json.dumps(log)
    assert sorted(d["event_type"] for d in log["deliveries"]) == sorted(expected)
    assert {(d["status"], d["attempts"], d["last_status_code"]) for d in log["deliveries"]} == {
        ("delivered", 1, 200)
    }


# -- a broker without a sender thread, driven by hand on a fake clock -------------------


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@dataclass
class Manual:
    settings: Settings
    rt: Runtime
    server: LiveServer
    admin: str
    auditor: str
    clock: Clock

    def api(self, key: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {key or self.admin}"}
        return httpx.Client(base_url=self.server.url, headers=headers, timeout=10)

    def sender(self, owner: str = "test-sender") -> WebhookSender:
        return WebhookSender(self.rt, owner=owner)


def _manual(settings: Settings, clock: Clock) -> tuple[Runtime, LiveServer]:
    rt = build_runtime(settings, builtins=[], plugins=[], upgrade=True)
    rt.clock = clock
    return rt, LiveServer(create_app(rt), free_socket()).start()


@pytest.fixture
def manual(make_settings) -> Iterator[Manual]:
    settings = make_settings(workers=0, webhook_max_failures=2)
    clock = Clock()
    rt, server = _manual(settings, clock)
    _, admin = create_api_key(rt.engine, role="admin")
    _, auditor = create_api_key(rt.engine, role="auditor")
    m = Manual(settings, rt, server, admin, auditor, clock)
    yield m
    m.server.stop()
    m.rt.close()


def ping(m: Manual, endpoint_id: str) -> str:
    with m.api() as api:
        resp = api.post(f"/v1/webhook-endpoints/{endpoint_id}/test")
    assert resp.status_code == 202, resp.text
    body = resp.json()
    assert body["status"] == "pending" and body["event_type"] == "webhook.ping"
    return body["id"]


def only(m: Manual, endpoint_id: str) -> WebhookDelivery:
    (d,) = deliveries(m.rt, endpoint_id)
    return d


def test_500s_are_retried_on_the_documented_schedule_then_fail(
    manual: Manual, hooks: HookReceiver
) -> None:
    assert manual.rt.workers is None  # BROKER_WORKERS=0: no sender of its own
    hooks.default = 500
    with manual.api() as api:
        endpoint = register(api, hooks.url)
    msg = ping(manual, endpoint["id"])
    sender = manual.sender()
    assert sender.run_due() == 1
    for n, delay in enumerate(RETRY_DELAYS, start=1):
        d = only(manual, endpoint["id"])
        assert (d.status, d.attempts, d.last_status_code) == ("pending", n, 500)
        assert d.next_attempt_at == manual.clock.now + timedelta(seconds=delay)
        manual.clock.advance(delay - 1)
        assert sender.run_due() == 0  # not due yet
        manual.clock.advance(1)
        assert sender.run_due() == 1
    d = only(manual, endpoint["id"])
    assert (d.status, d.attempts, d.last_status_code) == ("failed", len(RETRY_DELAYS) + 1, 500)
    got = hooks.received()
    assert len(got) == len(RETRY_DELAYS) + 1 == 10
    assert {h.id for h in got} == {msg}  # the same webhook-id on every attempt
    for hook in got:
        assert hook.verify(endpoint["secret"])["type"] == "webhook.ping"
    total = (manual.clock.now - datetime(2026, 1, 5, 12, 0, tzinfo=UTC)).total_seconds()
    assert total <= 3 * 24 * 3600
    with manual.api() as api:
        shown = api.get(f"/v1/webhook-endpoints/{endpoint['id']}").json()
        (logged,) = api.get(f"/v1/webhook-endpoints/{endpoint['id']}/deliveries").json()[
            "deliveries"
        ]
    assert shown["failure_run"] == 1 and shown["enabled"] is True
    assert logged["status"] == "failed" and logged["attempts"] == 10
    assert logged["last_status_code"] == 500 and "500" in logged["last_error"]


def _fail_for_good(m: Manual, sender: WebhookSender) -> None:
    for _ in range(len(RETRY_DELAYS) + 1):
        sender.run_due()
        m.clock.advance(25 * 3600)


def test_endpoint_is_disabled_after_the_failure_run_and_says_why(
    manual: Manual, hooks: HookReceiver
) -> None:
    hooks.default = 503
    with manual.api() as api:
        endpoint = register(api, hooks.url)
    sender = manual.sender()
    ping(manual, endpoint["id"])
    _fail_for_good(manual, sender)
    with manual.api() as api:
        assert api.get(f"/v1/webhook-endpoints/{endpoint['id']}").json()["enabled"] is True
    ping(manual, endpoint["id"])
    _fail_for_good(manual, sender)  # BROKER_WEBHOOK_MAX_FAILURES=2 in a row
    with manual.api() as api:
        shown = api.get(f"/v1/webhook-endpoints/{endpoint['id']}").json()
        refused = api.post(f"/v1/webhook-endpoints/{endpoint['id']}/test")
    assert shown["enabled"] is False
    assert "2 deliveries in a row" in shown["disabled_reason"]
    assert "503" in shown["disabled_reason"]
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "conflict"
    # a disabled endpoint gets no new deliveries from the log
    with session_scope(manual.rt.engine) as session:
        append_event(
            session,
            head_file=None,
            time=manual.clock(),
            event="connection.revoked",
            actor="test",
            connection_id="conn_x",
        )
    assert len(deliveries(manual.rt, endpoint["id"])) == 2
    # enabling it again ends the run
    with manual.api() as api:
        again = api.patch(f"/v1/webhook-endpoints/{endpoint['id']}", json={"enabled": True})
    assert again.status_code == 200
    assert again.json()["enabled"] is True and again.json()["disabled_reason"] is None
    assert again.json()["failure_run"] == 0


def test_a_restart_mid_retry_still_delivers_once(manual: Manual, hooks: HookReceiver) -> None:
    hooks.statuses.extend([500])  # then 200
    with manual.api() as api:
        endpoint = register(api, hooks.url)
    msg = ping(manual, endpoint["id"])
    assert manual.sender().run_due() == 1
    assert only(manual, endpoint["id"]).status == "pending"
    # the broker stops; a new one starts on the same database
    manual.server.stop()
    manual.rt.close()
    rt, server = _manual(manual.settings, manual.clock)
    manual.rt, manual.server = rt, server
    sender = manual.sender("after-restart")
    assert sender.run_due() == 0  # the retry is not due yet
    manual.clock.advance(RETRY_DELAYS[0])
    assert sender.run_due() == 1
    manual.clock.advance(7 * 24 * 3600)
    assert sender.run_due() == 0  # nothing more to send
    got = hooks.received()
    assert [(h.id, h.answered) for h in got] == [(msg, 500), (msg, 200)]
    d = only(manual, endpoint["id"])
    assert (d.status, d.attempts, d.last_status_code) == ("delivered", 2, 200)


def test_a_lease_left_by_a_dead_sender_is_taken_over(manual: Manual, hooks: HookReceiver) -> None:
    with manual.api() as api:
        endpoint = register(api, hooks.url)
    msg = ping(manual, endpoint["id"])
    now = manual.clock()
    (held,) = claim_due(
        manual.rt.engine, owner="dead", now=now, until=now + timedelta(seconds=60), limit=5
    )
    assert held.id == msg
    sender = manual.sender()
    assert sender.run_due() == 0  # held by the (dead) sender
    manual.clock.advance(61)
    assert sender.run_due() == 1
    assert [h.id for h in hooks.received()] == [msg]
    d = only(manual, endpoint["id"])
    assert (d.status, d.attempts) == ("delivered", 2)


def test_a_connection_s_events_go_one_at_a_time_in_order(
    manual: Manual, hooks: HookReceiver
) -> None:
    hooks.statuses.extend([500])
    with manual.api() as api:
        endpoint = register(api, hooks.url, ["connection.revoked", "consent.withdrawn"])
    with session_scope(manual.rt.engine) as session:
        for name in ("consent.withdrawn", "connection.revoked"):
            append_event(
                session,
                head_file=None,
                time=manual.clock(),
                event=name,
                actor="test",
                connection_id="conn_a",
            )
    with session_scope(manual.rt.engine) as session:  # rolled back: no delivery either
        append_event(
            session,
            head_file=None,
            time=manual.clock(),
            event="connection.revoked",
            actor="test",
            connection_id="conn_b",
        )
        session.rollback()
    assert len(deliveries(manual.rt, endpoint["id"])) == 2
    sender = manual.sender()
    assert sender.run_due() == 1  # the first fails: the second waits behind it
    assert sender.run_due() == 0
    manual.clock.advance(RETRY_DELAYS[0])
    assert sender.run_due() == 1
    assert sender.run_due() == 1
    types = [json.loads(h.body)["type"] for h in hooks.received()]
    assert types == ["consent.withdrawn", "consent.withdrawn", "connection.revoked"]


def test_rotation_signs_with_both_secrets_for_24_hours(manual: Manual, hooks: HookReceiver) -> None:
    with manual.api() as api:
        endpoint = register(api, hooks.url)
        rotated = api.post(f"/v1/webhook-endpoints/{endpoint['id']}/rotate-secret")
    assert rotated.status_code == 200
    new = rotated.json()["secret"]
    assert new.startswith("whsec_") and new != endpoint["secret"]
    sender = manual.sender()
    ping(manual, endpoint["id"])
    sender.run_due()
    (during,) = hooks.wait_for(1)
    during.verify(endpoint["secret"])
    during.verify(new)
    assert len(during.headers["webhook-signature"].split(" ")) == 2
    manual.clock.advance(24 * 3600 + 1)
    ping(manual, endpoint["id"])
    sender.run_due()
    after = hooks.wait_for(2)[1]
    after.verify(new)
    with pytest.raises(Exception, match="signature"):
        after.verify(endpoint["secret"])


# -- the outbox costs nothing without endpoints ----------------------------------------


def test_outbox_costs_one_query_without_endpoints_and_none_without_webhook_events(
    manual: Manual,
) -> None:
    statements: list[str] = []

    def count(_conn, _cursor, statement, *_args) -> None:
        statements.append(statement)

    with session_scope(manual.rt.engine) as session:
        pending = append_event(
            session, head_file=None, time=manual.clock(), event="transfer.pending", actor="t"
        )
        revoked = append_event(
            session,
            head_file=None,
            time=manual.clock(),
            event="connection.revoked",
            actor="t",
            connection_id="conn_c",
        )
        conn = session.connection()
        event.listen(manual.rt.engine, "before_cursor_execute", count)
        try:
            assert enqueue(conn, [pending]) == 0
            assert statements == []
            assert enqueue(conn, [pending, revoked, revoked]) == 0
            assert len(statements) == 1 and "webhook_endpoints" in statements[0]
        finally:
            event.remove(manual.rt.engine, "before_cursor_execute", count)


# -- the API's answers to bad input -------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"url": "http://example.com/hooks", "events": ["connection.created"]}, "url"),
        ({"url": "https://10.1.2.3/hooks", "events": ["connection.created"]}, "url"),
        ({"url": "https://user:pw@example.com/", "events": ["connection.created"]}, "url"),
        ({"url": "ftp://example.com/", "events": ["connection.created"]}, "url"),
        ({"url": "https://example.com/hooks", "events": []}, "events"),
        ({"url": "https://example.com/hooks", "events": ["connection.exploded"]}, "events"),
        ({"url": "https://example.com/hooks"}, "events"),
        ({"url": "https://example.com/hooks", "events": ["policy.changed"], "x": 1}, "x"),
        ({"url": "https://example.com/h", "events": ["policy.changed"], "description": 3}, None),
    ],
)
def test_bad_endpoint_input_is_refused_in_the_error_shape(
    manual: Manual, body: dict, field: str | None
) -> None:
    with manual.api() as api:
        resp = api.post("/v1/webhook-endpoints", json=body)
        listed = api.get("/v1/webhook-endpoints").json()
    assert resp.status_code == 422, resp.text
    error = resp.json()["error"]
    assert error["code"] == "invalid_input" and error["message"]
    if field is not None:
        assert field in json.dumps(error["details"])
    assert listed == {"webhook_endpoints": [], "next_cursor": None}


def test_endpoints_need_the_admin_key_and_never_show_the_secret(manual: Manual) -> None:
    body = {"url": "https://hooks.example.com/in", "events": ["transfer.failed"]}
    with httpx.Client(base_url=manual.server.url) as anon:
        assert anon.post("/v1/webhook-endpoints", json=body).status_code == 401
    with manual.api(manual.auditor) as api:
        assert api.post("/v1/webhook-endpoints", json=body).status_code == 403
        assert api.get("/v1/webhook-endpoints").status_code == 403
    with manual.api() as api:
        created = [api.post("/v1/webhook-endpoints", json=body).json() for _ in range(3)]
        first = api.get("/v1/webhook-endpoints", params={"limit": 2}).json()
        second = api.get(
            "/v1/webhook-endpoints", params={"limit": 2, "cursor": first["next_cursor"]}
        ).json()
        eid = created[0]["id"]
        patched = api.patch(
            f"/v1/webhook-endpoints/{eid}",
            json={"events": ["transfer.failed", "checkpoint.signed"], "description": "ops"},
        )
        bad_patch = api.patch(f"/v1/webhook-endpoints/{eid}", json={"url": "http://x.example"})
        missing = api.get("/v1/webhook-endpoints/whe_nope")
        bad_cursor = api.get("/v1/webhook-endpoints", params={"cursor": "!!"})
        assert api.delete(f"/v1/webhook-endpoints/{eid}").status_code == 204
        gone = api.get(f"/v1/webhook-endpoints/{eid}")
    pages = first["webhook_endpoints"] + second["webhook_endpoints"]
    assert sorted(e["id"] for e in pages) == sorted(c["id"] for c in created)
    assert second["next_cursor"] is None
    for c in created:
        assert c["secret"] not in json.dumps(pages)
    assert all("secret" not in e for e in pages)
    assert patched.status_code == 200
    assert patched.json()["events"] == ["transfer.failed", "checkpoint.signed"]
    assert patched.json()["created_at"].endswith("Z")
    assert bad_patch.status_code == 422 and bad_patch.json()["error"]["details"]["field"] == "url"
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    assert bad_cursor.status_code == 422
    assert gone.status_code == 404
    with Session(manual.rt.engine) as db:
        stored = db.get(WebhookEndpoint, created[1]["id"])
    assert stored is not None and created[1]["secret"] not in stored.secret  # sealed
    assert (
        manual.rt.vault.open(stored.secret, connection_id=stored.id, kind="webhook_secret")
        == created[1]["secret"]
    )


def test_the_migration_creates_what_the_models_declare(manual: Manual) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext
    from sqlmodel import SQLModel

    def ours(diff: object) -> bool:
        return "webhook_" in repr(diff)

    with manual.rt.engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        diffs = [d for d in compare_metadata(ctx, SQLModel.metadata) if ours(d)]
    assert diffs == []


def test_the_auditor_console_shows_each_endpoint_s_delivery_log(
    manual: Manual, hooks: HookReceiver, browser: Browser
) -> None:
    hooks.statuses.extend([502])
    with manual.api() as api:
        endpoint = register(api, hooks.url)
    msg = ping(manual, endpoint["id"])
    manual.sender().run_due()
    base = manual.server.url
    assert browser.get(f"{base}/audit/webhooks").headers["location"] == "/audit/login"
    page = browser.get(f"{base}/audit/login")
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)
    signed = browser.post(f"{base}/audit/login", data={"key": manual.auditor, "csrf": csrf})
    assert signed.status_code == 303
    listing = browser.get(f"{base}/audit/webhooks")
    assert listing.status_code == 200
    assert hooks.url in listing.text and f'data-endpoint="{endpoint["id"]}"' in listing.text
    log = browser.get(f"{base}/audit/webhooks?endpoint={endpoint['id']}")
    assert log.status_code == 200
    row = re.search(rf'<tr data-delivery="{msg}">(.*?)</tr>', log.text, re.S)
    assert row is not None
    assert "webhook.ping" in row.group(1) and "HTTP 502" in row.group(1)
    assert "<td>pending</td>" in row.group(1) and "<td>1</td>" in row.group(1)
    assert endpoint["secret"] not in log.text
    assert endpoint["secret"].removeprefix("whsec_") not in log.text
    delivered = browser.get(f"{base}/audit/webhooks?endpoint={endpoint['id']}&status=delivered")
    assert msg not in delivered.text and "No messages with status delivered" in delivered.text
