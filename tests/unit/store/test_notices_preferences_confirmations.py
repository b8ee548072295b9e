"""Queries behind notices (policy changes, a user's connections), objections (queued
transfers) and host confirmation (the conditional activation, the overdue ones)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine
from sqlmodel import Session

from broker.store.confirmations import activate_pending, overdue_pending
from broker.store.db import session_scope
from broker.store.models import Connection, Transfer
from broker.store.notices import has_connection_to, policy_changes_after, user_connections
from broker.store.policy_models import PolicyChange
from broker.store.preferences import queued_transfers

T0 = datetime(2026, 1, 1, tzinfo=UTC)
PENDING = "pending_confirmation"


def _connection(
    cid: str,
    *,
    user: str = "u",
    connector: str = "demo",
    status: str = "active",
    at: datetime = T0,
    confirm_by: datetime | None = None,
) -> Connection:
    return Connection(
        id=cid,
        user_id=user,
        connector_id=connector,
        status=status,
        created_at=at,
        confirm_by=confirm_by,
    )


def _change(cid: str, connector: str, at: datetime) -> PolicyChange:
    return PolicyChange(
        id=cid,
        connector_id=connector,
        before_version="a",
        after_version="b",
        detected_at=at,
        detected_by="check",
        classification="minor",
        changes=[],
        digests={},
    )


def test_policy_changes_after_a_moment_oldest_first(engine: Engine) -> None:
    with session_scope(engine) as session:
        session.add_all(
            [
                _change("pc_2", "demo", T0 + timedelta(hours=2)),
                _change("pc_0", "demo", T0),
                _change("pc_1", "demo", T0 + timedelta(hours=1)),
                _change("pc_x", "other", T0 + timedelta(hours=3)),
            ]
        )
    with Session(engine) as session:
        every = policy_changes_after(session, connector_id="demo", after=None)
        assert [c.id for c in every] == ["pc_0", "pc_1", "pc_2"]
        later = policy_changes_after(session, connector_id="demo", after=T0)
        assert [c.id for c in later] == ["pc_1", "pc_2"]


def test_a_users_connections_by_status_and_id_oldest_first(engine: Engine) -> None:
    with session_scope(engine) as session:
        session.add_all(
            [
                _connection("con_b", at=T0 + timedelta(seconds=1)),
                _connection("con_a"),
                _connection("con_r", status="revoked"),
                _connection("con_o", user="other", connector="elsewhere"),
            ]
        )
    with Session(engine) as session:
        shown = user_connections(session, user_id="u", statuses=["active"])
        assert [c.id for c in shown] == ["con_a", "con_b"]
        some = user_connections(
            session,
            user_id="u",
            statuses=["active", "revoked"],
            connection_ids=["con_b", "con_r", "con_o"],
        )
        assert [c.id for c in some] == ["con_r", "con_b"]
        assert user_connections(session, user_id="u", statuses=["active"], connection_ids=[]) == []
        assert has_connection_to(session, user_id="u", connector_id="demo")  # revoked counts too
        assert not has_connection_to(session, user_id="u", connector_id="elsewhere")


def test_queued_transfers_are_the_users_pending_unleased_ones(engine: Engine) -> None:
    with session_scope(engine) as session:
        session.add(_connection("con_a"))
        session.flush()
        for tid, user, status, owner in [
            ("tr_1", "u", "pending", None),
            ("tr_2", "u", "pending", "worker"),
            ("tr_3", "u", "delivered", None),
            ("tr_4", "v", "pending", None),
        ]:
            session.add(
                Transfer(
                    id=tid,
                    connection_id="con_a",
                    user_id=user,
                    connector_id="demo",
                    action="send",
                    status=status,
                    categories=["contact"],
                    field_paths=[],
                    dropped=[],
                    attempts=[],
                    lease_owner=owner,
                )
            )
    with Session(engine) as session:
        assert queued_transfers(session, user_id="u") == [("tr_1", "demo", ["contact"])]


def test_a_pending_connection_is_activated_once_and_overdue_ones_are_found(
    engine: Engine,
) -> None:
    deadline = T0 + timedelta(minutes=10)
    with session_scope(engine) as session:
        session.add_all(
            [
                _connection("con_p", status=PENDING, confirm_by=deadline),
                _connection("con_q", status=PENDING, confirm_by=T0),
                _connection("con_a", confirm_by=T0),
            ]
        )
    with session_scope(engine) as session:
        assert overdue_pending(session, now=T0) == ["con_q"]
        assert sorted(overdue_pending(session, now=deadline)) == ["con_p", "con_q"]
        assert activate_pending(session, connection_id="con_p", at=T0)
        assert not activate_pending(session, connection_id="con_p", at=T0)
        assert not activate_pending(session, connection_id="con_a", at=T0)
    with Session(engine) as session:
        row = session.get(Connection, "con_p")
        assert row is not None
        assert (row.status, row.activated_at, row.updated_at, row.confirm_by) == (
            "active",
            T0,
            T0,
            None,
        )
        assert overdue_pending(session, now=deadline) == ["con_q"]
