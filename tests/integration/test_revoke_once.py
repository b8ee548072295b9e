"""A revocation is claimed once: of concurrent DELETEs one calls the provider and writes the
events, the others answer already_revoked; an interrupted one is finished later."""

from __future__ import annotations

import threading
from datetime import timedelta

import httpx
from sqlmodel import Session, select

from broker.flows.revoke import claim_ttl, resume_interrupted_revocations
from broker.store.db import session_scope
from broker.store.models import AuditRow, Connection, ConnectionToken
from tests.integration.conftest import Browser, Stack, connect
from tests.integration.test_me_pages import share

WAIT = 10  # seconds a condition may take before the test gives up (never slept)
GRANTED = {"work_item": {"id": "W-1", "title": "Ship it"}}  # within a required-only grant


class RevocationGate(httpx.BaseTransport):
    """Wraps the broker's outgoing transport: counts requests to the provider's revocation
    endpoint and holds them until ``release``."""

    def __init__(self, inner: httpx.BaseTransport) -> None:
        self.inner = inner
        self.calls: list[str] = []
        self.finished: list[dict] = []
        self.cond = threading.Condition()
        self.released = False

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/oauth/revoke"):
            with self.cond:
                self.calls.append(request.url.path)
                self.cond.notify_all()
                self.cond.wait_for(lambda: self.released, timeout=WAIT)
        return self.inner.handle_request(request)

    def wait_for(self, predicate) -> bool:
        with self.cond:
            return self.cond.wait_for(predicate, timeout=WAIT)

    def finish(self, result: dict) -> None:
        with self.cond:
            self.finished.append(result)
            self.cond.notify_all()

    def release(self) -> None:
        with self.cond:
            self.released = True
            self.cond.notify_all()


def _events(stack: Stack, connection_id: str) -> list[str]:
    with Session(stack.rt.engine) as session:
        rows = session.exec(
            select(AuditRow)
            .where(AuditRow.connection_id == connection_id)
            .where(AuditRow.event.in_(["consent.withdrawn", "connection.revoked"]))  # type: ignore[attr-defined]
            .order_by(AuditRow.seq)  # type: ignore[arg-type]
        ).all()
    return [r.event for r in rows]


def test_concurrent_revocations_call_the_provider_once(stack: Stack, browser: Browser) -> None:
    connection_id = connect(stack, browser, optional=[])
    gate = RevocationGate(stack.rt.http._transport)
    stack.rt.http._transport = gate

    def delete() -> None:
        with stack.api() as api:
            resp = api.delete(f"/v1/connections/{connection_id}")
        gate.finish({"status": resp.status_code, **resp.json()})

    threads = [threading.Thread(target=delete) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        # One caller is at the provider, held there.
        assert gate.wait_for(lambda: len(gate.calls) >= 1)
        # The others answer without it (or, without the claim, reach the provider too).
        assert gate.wait_for(lambda: len(gate.finished) >= 2 or len(gate.calls) >= 2)
        # The claim is committed before the provider is called: no transfer meanwhile.
        assert share(stack, connection_id, data=GRANTED) == 409
    finally:
        gate.release()
        for t in threads:
            t.join(timeout=WAIT)
    results = gate.finished
    assert [r["status"] for r in results] == [200, 200, 200]
    assert sorted(r["already_revoked"] for r in results) == [False, True, True]
    (winner,) = [r for r in results if not r["already_revoked"]]
    assert winner["connection"]["status"] == "revoked"
    assert winner["provider_revocation"] == {"refresh_token": "revoked", "access_token": "revoked"}
    for loser in (r for r in results if r["already_revoked"]):
        assert loser["provider_revocation"] == {}
        assert loser["connection"]["status"] in ("revoking", "revoked")
    assert gate.calls == ["/oauth/revoke", "/oauth/revoke"]  # refresh token, access token
    assert _events(stack, connection_id) == ["consent.withdrawn", "connection.revoked"]
    with stack.api() as api:
        again = api.delete(f"/v1/connections/{connection_id}").json()
    assert again["already_revoked"] is True and again["connection"]["status"] == "revoked"
    assert len(gate.calls) == 2


def _interrupt(stack: Stack, connection_id: str, *, age: timedelta) -> str:
    """Leave the connection as a revocation that crashed after its claim ``age`` ago;
    returns its access token (still live at the provider)."""
    with Session(stack.rt.engine) as session:
        token_row = session.get(ConnectionToken, connection_id)
    access = stack.rt.vault.open(
        token_row.access_token, connection_id=connection_id, kind="access_token"
    )
    with session_scope(stack.rt.engine) as session:
        conn = session.get(Connection, connection_id)
        conn.status = "revoking"
        conn.updated_at = stack.rt.clock() - age
        session.add(conn)
    return access


def test_a_claim_in_progress_is_not_taken_over(stack: Stack, browser: Browser) -> None:
    connection_id = connect(stack, browser, optional=[])
    access = _interrupt(stack, connection_id, age=timedelta(seconds=1))
    with stack.api() as api:
        resp = api.delete(f"/v1/connections/{connection_id}").json()
    assert resp["already_revoked"] is True
    assert resp["connection"]["status"] == "revoking"
    assert share(stack, connection_id, data=GRANTED) == 409  # the tokens are not usable meanwhile
    assert stack.provider.is_active(access)
    assert _events(stack, connection_id) == []
    assert resume_interrupted_revocations(stack.rt) == []  # not stale yet


def test_an_interrupted_revocation_is_finished_once_its_claim_is_stale(
    stack: Stack, browser: Browser
) -> None:
    connection_id = connect(stack, browser, optional=[])
    stale = claim_ttl(stack.rt) + timedelta(seconds=1)
    access = _interrupt(stack, connection_id, age=stale)
    with stack.api() as api:
        resp = api.delete(f"/v1/connections/{connection_id}").json()
    assert resp["already_revoked"] is False
    assert resp["connection"]["status"] == "revoked"
    assert not stack.provider.is_active(access)
    assert _events(stack, connection_id) == ["consent.withdrawn", "connection.revoked"]
    with Session(stack.rt.engine) as session:
        assert session.get(ConnectionToken, connection_id) is None
        event = session.exec(
            select(AuditRow).where(
                AuditRow.connection_id == connection_id, AuditRow.event == "connection.revoked"
            )
        ).one()
    assert event.details["resumed"] is True
    assert event.details["previous_status"] == "revoking"


def test_broker_start_finishes_stale_revocations(stack: Stack, browser: Browser) -> None:
    connection_id = connect(stack, browser, optional=[])
    access = _interrupt(stack, connection_id, age=claim_ttl(stack.rt) + timedelta(seconds=1))
    assert resume_interrupted_revocations(stack.rt) == [connection_id]
    assert not stack.provider.is_active(access)
    with Session(stack.rt.engine) as session:
        assert session.get(Connection, connection_id).status == "revoked"
    assert resume_interrupted_revocations(stack.rt) == []
    assert _events(stack, connection_id) == ["consent.withdrawn", "connection.revoked"]
