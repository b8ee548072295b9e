"""The delivery engine over real sockets: accept then deliver, async answers, outcomes
written once, faults between delivery and record, cancellation, token refresh races."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import event
from sqlalchemy.exc import OperationalError
from sqlmodel import Session, select

from broker.flows.audit import verify_log
from broker.flows.engine import finish
from broker.flows.submit import wait_for_outcome
from broker.store.models import AuditRow, ConnectionToken, Transfer
from tests.integration.conftest import Browser, Stack, connect

NAME = "user.name"
DATA = {"work_item": {"id": "W-1", "title": "Ship it"}}


@pytest.fixture
def connected(stack: Stack, browser: Browser) -> str:
    return connect(stack, browser, optional=[NAME])


def post(stack: Stack, connection_id: str, *, headers: dict | None = None, **body: object):
    body.setdefault("action", "post_message")
    body.setdefault("data", DATA)
    with stack.api() as api:
        return api.post(
            f"/v1/connections/{connection_id}/transfers", json=body, headers=headers or {}
        )


def events(stack: Stack, transfer_id: str) -> list[str]:
    with Session(stack.rt.engine) as db:
        rows = db.exec(
            select(AuditRow).where(AuditRow.transfer_id == transfer_id).order_by(AuditRow.seq)
        ).all()
    return [r.event for r in rows]


def stored(stack: Stack, transfer_id: str) -> Transfer:
    with Session(stack.rt.engine) as db:
        t = db.get(Transfer, transfer_id)
    assert t is not None
    return t


def test_respond_async_answers_202_and_the_worker_delivers(stack: Stack, connected: str) -> None:
    resp = post(stack, connected, headers={"Prefer": "respond-async"})
    assert resp.status_code == 202, resp.text
    tid = resp.json()["id"]
    assert resp.headers["location"] == f"/v1/transfers/{tid}"
    assert resp.json()["status"] == "pending"
    assert "payload_sealed" not in resp.json() and "lease_owner" not in resp.json()
    done = wait_for_outcome(stack.rt, tid, timeout=10)
    assert done.status == "delivered"
    with stack.api(stack.auditor_key) as api:
        got = api.get(f"/v1/transfers/{tid}")
    assert got.status_code == 200
    assert got.json()["status"] == "delivered"
    assert [a.get("status") for a in got.json()["attempts"]] == [201]
    # the third party got the transfer id as its idempotency key, on the wire
    assert [r.headers.get("idempotency-key") for r in stack.provider.received] == [tid]
    assert done.payload_sealed is None  # the payload is erased once the outcome is final
    assert events(stack, tid) == ["transfer.pending", "transfer.delivered"]


def test_sync_default_keeps_the_201_contract(stack: Stack, connected: str) -> None:
    resp = post(stack, connected)
    assert resp.status_code == 201, resp.text
    assert resp.json()["status"] == "delivered"
    assert stored(stack, resp.json()["id"]).payload_sealed is None


def test_idempotency_key_header_replays(stack: Stack, connected: str) -> None:
    first = post(stack, connected, headers={"Idempotency-Key": "k-1"})
    again = post(stack, connected, headers={"Idempotency-Key": "k-1"})
    assert first.status_code == 201 and again.status_code == 200
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json()["id"] == first.json()["id"]
    assert len(stack.provider.received) == 1
    clash = post(stack, connected, headers={"Idempotency-Key": "k-1"}, idempotency_key="k-2")
    assert clash.status_code == 422


def test_cancel_a_queued_transfer(stack: Stack, connected: str) -> None:
    stack.rt.settings.workers = 0  # nobody delivers in this process
    resp = post(stack, connected, headers={"Prefer": "respond-async"})
    tid = resp.json()["id"]
    with stack.api() as api:
        cancelled = api.post(f"/v1/transfers/{tid}/cancel")
        twice = api.post(f"/v1/transfers/{tid}/cancel")
        missing = api.post("/v1/transfers/tr_nope/cancel")
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["status"] == "cancelled"
    assert twice.status_code == 409
    assert twice.json()["error"]["code"] == "not_cancellable"
    assert missing.status_code == 404
    assert events(stack, tid) == ["transfer.pending", "transfer.cancelled"]
    assert stored(stack, tid).payload_sealed is None
    assert stack.provider.received == []


def test_revocation_cancels_queued_transfers(stack: Stack, connected: str) -> None:
    stack.rt.settings.workers = 0
    tids = [post(stack, connected, headers={"Prefer": "respond-async"}).json()["id"] for _ in "ab"]
    with stack.api() as api:
        assert api.delete(f"/v1/connections/{connected}").status_code == 200
    for tid in tids:
        assert stored(stack, tid).status == "cancelled"
        assert events(stack, tid)[-1] == "transfer.cancelled"
    assert stack.provider.received == []
    assert verify_log(stack.rt).ok


def test_a_worker_finds_a_revoked_connection_and_sends_nothing(
    stack: Stack, connected: str
) -> None:
    stack.rt.settings.workers = 0
    tid = post(stack, connected, headers={"Prefer": "respond-async"}).json()["id"]
    assert stored(stack, tid).lease_owner is None
    # leased to this process before the revocation: revoke cannot cancel it
    from broker.flows.workers import DeliveryWorkers
    from broker.store.jobs import claim_due

    workers = DeliveryWorkers(stack.rt, threads=1)
    now = stack.rt.clock()
    [claim] = claim_due(
        stack.rt.engine, owner=workers.owner, now=now, until=now + timedelta(minutes=1), limit=5
    )
    with stack.api() as api:
        assert api.delete(f"/v1/connections/{connected}").status_code == 200
    from broker.flows.engine import run_claim

    done = run_claim(stack.rt, claim, owner=workers.owner)
    assert done is not None and done.status == "cancelled"
    assert stack.provider.received == []


def test_retry_after_beyond_the_hold_is_rescheduled_not_slept(stack: Stack, connected: str) -> None:
    stack.provider.fail_api(429, headers={"Retry-After": "3600"})
    resp = post(stack, connected)
    assert resp.status_code == 202, resp.text  # the caller is told at once, not in an hour
    t = stored(stack, resp.json()["id"])
    assert t.status == "pending" and t.lease_owner is None
    assert t.next_attempt_at is not None
    assert (t.next_attempt_at - stack.rt.clock()) > timedelta(minutes=59)
    assert [a.get("status") for a in t.attempts] == [429]
    assert 3600 not in stack.waits  # nobody slept through it
    # the worker is free: another transfer goes through at once
    assert post(stack, connected).status_code == 201


def _fail_outcome_writes(engine, times: int) -> list[int]:
    """Inject a database fault: the next ``times`` outcome updates fail as a dropped
    connection would (OperationalError), after the delivery went out."""
    seen: list[int] = []

    def before(conn, cursor, statement, params, context, executemany):
        if statement.startswith("UPDATE transfers SET status") and len(seen) < times:
            seen.append(1)
            raise OperationalError(statement, params, Exception("server closed the connection"))

    event.listen(engine, "before_cursor_execute", before)
    return seen


def test_a_dropped_database_connection_after_delivery_still_records_it(
    stack: Stack, connected: str
) -> None:
    seen = _fail_outcome_writes(stack.rt.engine, times=2)
    resp = post(stack, connected)
    assert len(seen) == 2  # the fault really hit the outcome write, twice
    assert resp.status_code == 201, resp.text
    assert stored(stack, resp.json()["id"]).status == "delivered"
    assert len(stack.provider.received) == 1
    assert verify_log(stack.rt).ok


def test_an_outcome_that_cannot_be_recorded_is_a_503_and_never_failed(
    stack: Stack, connected: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("broker.flows.engine._DB_RETRIES", (0.0,))
    _fail_outcome_writes(stack.rt.engine, times=100)
    resp = post(stack, connected)
    assert resp.status_code == 503, resp.text
    error = resp.json()["error"]
    assert error["code"] == "outcome_not_recorded"
    tid = error["details"]["transfer_id"]
    assert error["details"]["outcome"] == "delivered"
    assert len(stack.provider.received) == 1  # it did arrive
    assert stored(stack, tid).status == "pending"  # and nothing false was recorded


def test_a_late_outcome_changes_nothing(stack: Stack, connected: str) -> None:
    stack.rt.settings.workers = 0
    tid = post(stack, connected, headers={"Prefer": "respond-async"}).json()["id"]
    from broker.store.jobs import claim_due

    now = stack.rt.clock()
    claim_due(stack.rt.engine, owner="w1", now=now, until=now + timedelta(minutes=1), limit=1)
    _first, won = finish(stack.rt, stored(stack, tid), owner="w1", status="failed", attempts=[])
    late, won_late = finish(
        stack.rt, stored(stack, tid), owner="w1", status="delivered", attempts=[]
    )
    assert won and not won_late
    assert late.status == "failed"
    assert events(stack, tid) == ["transfer.pending", "transfer.failed", "transfer.late_outcome"]
    assert verify_log(stack.rt).ok


def test_short_lived_tokens_make_one_refresh_for_many_transfers(
    stack: Stack, browser: Browser
) -> None:
    # A token that lives 20 s, under the 30 s refresh margin: the refreshed token is
    # already inside the margin, and waiters must still take it instead of refreshing.
    stack.provider.access_token_ttl = 20
    conn = connect(stack, browser, optional=[NAME])
    with Session(stack.rt.engine) as db:
        row = db.get(ConnectionToken, conn)
    assert row is not None
    start = stack.rt.clock()
    # 11 s into its 20 s life: past half, so it is due for refresh
    stack.rt.clock = lambda: start + timedelta(seconds=11)
    stack.provider.token_requests.clear()
    with ThreadPoolExecutor(max_workers=16) as pool:
        results = list(pool.map(lambda _: post(stack, conn), range(40)))
    assert [r.status_code for r in results] == [201] * 40
    assert stack.provider.token_requests.count("refresh_token") == 1
    with Session(stack.rt.engine) as db:
        refreshed = db.exec(select(AuditRow).where(AuditRow.event == "token.refreshed")).all()
    assert len(refreshed) == 1
    assert refreshed[0].details["rotated"] is True  # the sandbox rotates refresh tokens


def test_metrics_for_admins_only(stack: Stack, connected: str) -> None:
    assert post(stack, connected).status_code == 201
    with stack.api() as api:
        resp = api.get("/metrics")
    assert resp.status_code == 200
    text = resp.text
    assert 'broker_deliveries_total{connector="sandbox",outcome="delivered"} 1.0' in text
    assert "broker_transfers_pending 0.0" in text
    assert "broker_oldest_pending_seconds" in text
    with stack.api(stack.auditor_key) as api:
        assert api.get("/metrics").status_code == 403
    import httpx

    assert httpx.get(f"{stack.url}/metrics").status_code == 401


def _with_delivery(stack: Stack, **delivery: object) -> None:
    """Give the sandbox connector these ``[delivery]`` settings (as its manifest would)."""
    from broker.core.manifest import DeliverySettings

    connector = stack.rt.registry.get("sandbox")
    connector.manifest = connector.manifest.model_copy(
        update={"delivery": DeliverySettings(**delivery)}
    )


def test_ordered_connections_deliver_oldest_first_one_at_a_time(
    stack: Stack, connected: str
) -> None:
    from broker.store.jobs import claim_due

    _with_delivery(stack, ordered=True)
    stack.rt.settings.workers = 0
    tids = [post(stack, connected, headers={"Prefer": "respond-async"}).json()["id"] for _ in "abc"]
    now = stack.rt.clock()
    later = now + timedelta(minutes=1)

    def claim() -> list[str]:
        got = claim_due(
            stack.rt.engine,
            owner="w",
            now=stack.rt.clock(),
            until=later,
            limit=10,
            ordered=["sandbox"],
        )
        return [c.transfer_id for c in got]

    assert claim() == [tids[0]]  # the others wait behind it
    assert claim() == []  # still held: nothing else of this connection may start
    finish(stack.rt, stored(stack, tids[0]), owner="w", status="delivered", attempts=[])
    assert claim() == [tids[1]]
    # without ordering all due rows are claimable at once
    assert [
        c.transfer_id
        for c in claim_due(stack.rt.engine, owner="w2", now=stack.rt.clock(), until=later, limit=10)
    ] == [tids[2]]


def test_rate_limit_reschedules_instead_of_sending(stack: Stack, connected: str) -> None:
    _with_delivery(stack, rate_limit="2/hour")
    assert [post(stack, connected).status_code for _ in range(2)] == [201, 201]
    third = post(stack, connected)
    assert third.status_code == 202, third.text  # not sent: due when the window ends
    t = stored(stack, third.json()["id"])
    assert t.status == "pending" and t.attempts == [] and t.lease_owner is None
    assert t.next_attempt_at is not None and t.next_attempt_at > stack.rt.clock()
    assert len(stack.provider.received) == 2


def test_no_answer_after_sending_is_outcome_unknown_never_failed(
    stack: Stack, connected: str
) -> None:
    import threading

    stack.provider.answer_gate = gate = threading.Event()
    stack.rt.settings.http_timeout = 0.5  # the broker stops waiting; the item has arrived
    try:
        resp = post(stack, connected)
    finally:
        gate.set()
    assert resp.status_code == 502, resp.text
    error = resp.json()["error"]
    assert error["code"] == "outcome_unknown"
    assert error["details"]["transfer"]["status"] == "outcome_unknown"
    assert len(stack.provider.received) == 1  # it did arrive: "failed" would be a lie
    assert events(stack, error["details"]["transfer_id"])[-1] == "transfer.outcome_unknown"


def test_no_answer_from_an_idempotent_third_party_is_sent_again_under_the_same_key(
    stack: Stack, connected: str
) -> None:
    import threading

    _with_delivery(stack, idempotent=True)
    stack.provider.answer_gate = gate = threading.Event()
    stack.rt.settings.http_timeout = 0.5
    stack.rt.settings.worker_poll = 0.1
    resp = post(stack, connected, headers={"Prefer": "respond-async"})
    tid = resp.json()["id"]
    try:
        for _ in range(100):  # until the first run gave up waiting and rescheduled it
            first = wait_for_outcome(stack.rt, tid, timeout=0.2)
            if first.attempts:
                break
        assert first.status == "pending" and first.lease_owner is None
        assert "no answer" in first.attempts[0]["error"]
    finally:
        gate.set()  # the third party answers again from now on
    done = wait_for_outcome(stack.rt, tid, timeout=20)
    assert done.status == "delivered", done.reason
    keys = [r.headers.get("idempotency-key") for r in stack.provider.received]
    assert keys == [tid, tid]  # the same key both times: a deduplicating party stores one
    assert "no answer" in done.attempts[0]["error"]


def test_a_slow_refresh_whose_caller_gave_up_still_keeps_the_rotated_token(
    stack: Stack, connected: str
) -> None:
    import threading

    with Session(stack.rt.engine) as db:
        old = db.get(ConnectionToken, connected)
    old_refresh = stack.rt.vault.open(
        old.refresh_token, connection_id=connected, kind="refresh_token"
    )
    start = stack.rt.clock()
    stack.rt.clock = lambda: start + timedelta(hours=2)  # the access token is due
    stack.rt.settings.http_timeout = 0.5  # the delivery's patience
    stack.provider.token_gate = gate = threading.Event()  # rotated, answered late
    stack.provider.token_requests.clear()
    try:
        first = post(stack, connected)
    finally:
        gate.set()
    assert first.status_code == 502, first.text  # nothing was sent: a clear failure
    assert "refresh" in first.json()["error"]["message"]
    assert stack.provider.received == []
    # the refresh finished after its caller left, and committed the rotated token
    for thread in threading.enumerate():
        if thread.name == f"refresh-{connected}":
            thread.join(10)
            assert not thread.is_alive()
    with Session(stack.rt.engine) as db:
        row = db.get(ConnectionToken, connected)
    assert row.updated_at != old.updated_at
    new_refresh = stack.rt.vault.open(
        row.refresh_token, connection_id=connected, kind="refresh_token"
    )
    assert new_refresh != old_refresh and stack.provider.is_active(new_refresh)
    assert not stack.provider.is_active(old_refresh)  # reuse would now be refused
    stack.rt.clock = lambda: datetime.now(UTC)  # back to now: the new token is fresh
    second = post(stack, connected)
    assert second.status_code == 201, second.text  # the connection is still usable
    assert stack.provider.token_requests.count("refresh_token") == 1


def test_a_delivery_reads_its_token_with_its_claim(stack: Stack, connected: str) -> None:
    """The run's one read of its connection brings the token row too: no statement of
    its own reads connection_tokens (a statement per delivery saved), sync and async."""
    seen: list[str] = []

    def before(conn, cursor, statement, params, context, executemany):
        seen.append(" ".join(statement.split()))

    event.listen(stack.rt.engine, "before_cursor_execute", before)
    try:
        sync = post(stack, connected)
        queued = post(stack, connected, headers={"Prefer": "respond-async"})
        assert wait_for_outcome(stack.rt, queued.json()["id"], timeout=10).status == "delivered"
    finally:
        event.remove(stack.rt.engine, "before_cursor_execute", before)
    assert sync.status_code == 201, sync.text
    assert len(stack.provider.received) == 2
    token_reads = [s for s in seen if "FROM connection_tokens" in s and "JOIN" not in s]
    assert token_reads == []
    assert any("JOIN connection_tokens" in s for s in seen)
