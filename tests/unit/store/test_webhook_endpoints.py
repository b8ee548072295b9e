"""Queries of webhook endpoints and their delivery log: paged newest first, filtered
by status, deleted per endpoint; and the sender's cheap "anything due?" read."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine
from sqlmodel import Session

from broker.store.db import session_scope
from broker.store.webhook_endpoints import (
    all_endpoints_for_update,
    delete_deliveries,
    deliveries_page,
    endpoints_page,
)
from broker.store.webhook_jobs import any_due
from broker.store.webhook_models import WebhookDelivery, WebhookEndpoint

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _endpoint(eid: str, at: datetime) -> WebhookEndpoint:
    return WebhookEndpoint(
        id=eid, url="https://h.example/hook", events=["*"], secret="s", created_at=at, updated_at=at
    )


def _delivery(did: str, endpoint_id: str, at: datetime, **values: object) -> WebhookDelivery:
    return WebhookDelivery(
        id=did,
        endpoint_id=endpoint_id,
        event_type="webhook.ping",
        created_at=at,
        next_attempt_at=at,
        **values,
    )


def test_endpoints_and_deliveries_page_newest_first(engine: Engine) -> None:
    with session_scope(engine) as session:
        session.add_all(
            [
                _endpoint("whe_a", T0),
                _endpoint("whe_b", T0),
                _endpoint("whe_c", T0 + timedelta(seconds=1)),
            ]
        )
        session.flush()
        session.add_all(
            [
                _delivery("msg_1", "whe_a", T0),
                _delivery("msg_2", "whe_a", T0 + timedelta(seconds=1), status="delivered"),
                _delivery("msg_3", "whe_a", T0 + timedelta(seconds=2)),
                _delivery("msg_4", "whe_b", T0 + timedelta(seconds=3)),
            ]
        )
    with Session(engine) as session:
        first = endpoints_page(session, before=None, limit=2)
        assert [e.id for e in first] == ["whe_c", "whe_b"]
        rest = endpoints_page(session, before=(first[-1].created_at, first[-1].id), limit=2)
        assert [e.id for e in rest] == ["whe_a"]
        mine = deliveries_page(session, endpoint_id="whe_a", status=None, before=None, limit=5)
        assert [d.id for d in mine] == ["msg_3", "msg_2", "msg_1"]
        pending = deliveries_page(
            session, endpoint_id="whe_a", status="pending", before=None, limit=5
        )
        assert [d.id for d in pending] == ["msg_3", "msg_1"]
        older = deliveries_page(
            session,
            endpoint_id="whe_a",
            status=None,
            before=(mine[0].created_at, mine[0].id),
            limit=1,
        )
        assert [d.id for d in older] == ["msg_2"]
    with session_scope(engine) as session:
        delete_deliveries(session, endpoint_id="whe_a")
        assert {e.id for e in all_endpoints_for_update(session)} == {"whe_a", "whe_b", "whe_c"}
    with Session(engine) as session:
        left = deliveries_page(session, endpoint_id="whe_b", status=None, before=None, limit=5)
        assert [d.id for d in left] == ["msg_4"]
        assert (
            deliveries_page(session, endpoint_id="whe_a", status=None, before=None, limit=5) == []
        )


def test_a_delivery_is_due_when_its_time_came_or_its_lease_lapsed(engine: Engine) -> None:
    with session_scope(engine) as session:
        session.add(_endpoint("whe_a", T0))
        session.flush()
        session.add(_delivery("msg_1", "whe_a", T0 + timedelta(minutes=1)))
        session.add(_delivery("msg_2", "whe_a", T0, status="delivered"))
        session.add(
            _delivery("msg_3", "whe_a", T0, lease_owner="w", lease_until=T0 + timedelta(minutes=5))
        )
    with engine.connect() as conn:
        assert not any_due(conn, now=T0)
        assert any_due(conn, now=T0 + timedelta(minutes=1))  # msg_1's time came
    with session_scope(engine) as session:
        row = session.get(WebhookDelivery, "msg_1")
        assert row is not None
        row.status = "failed"
        session.add(row)
    with engine.connect() as conn:
        assert not any_due(conn, now=T0 + timedelta(minutes=5))
        assert any_due(conn, now=T0 + timedelta(minutes=5, seconds=1))  # msg_3's lease lapsed
