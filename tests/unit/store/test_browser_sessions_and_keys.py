"""Queries of browser sessions and API keys: found by digest, ended once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine
from sqlmodel import Session

from broker.store.api_keys import find_key, list_keys
from broker.store.browser_sessions import (
    delete_expired_sessions,
    end_key_sessions,
    end_session,
    find_browser_session,
)
from broker.store.db import session_scope
from broker.store.models import ApiKey, BrowserSessionRecord

T0 = datetime(2026, 1, 1, tzinfo=UTC)
T1 = T0 + timedelta(days=1)


def _session_row(
    n: int, *, expires_at: datetime, api_key_id: str | None = None
) -> BrowserSessionRecord:
    return BrowserSessionRecord(
        id=f"bs_{n}",
        token_hash=f"{n:064x}",
        kind="auditor",
        subject="s",
        api_key_id=api_key_id,
        created_at=T0,
        expires_at=expires_at,
    )


def test_sessions_found_by_digest_ended_once_and_expired_deleted(engine: Engine) -> None:
    with session_scope(engine) as session:
        session.add(_session_row(1, expires_at=T0 + timedelta(hours=1)))
        session.add(_session_row(2, expires_at=T0))
    with session_scope(engine) as session:
        delete_expired_sessions(session, now=T0)
    with session_scope(engine) as session:
        assert find_browser_session(session, digest=f"{2:064x}") is None
        row = find_browser_session(session, digest=f"{1:064x}")
        assert row is not None and row.id == "bs_1" and row.ended_at is None
        assert end_session(session, digest=f"{1:064x}", at=T0) is True
        assert end_session(session, digest=f"{1:064x}", at=T0) is False
        assert end_session(session, digest=f"{9:064x}", at=T0) is False
    with Session(engine) as session:
        row = find_browser_session(session, digest=f"{1:064x}")
        assert row is not None and row.ended_at == T0


def test_a_keys_sessions_end_and_no_other(engine: Engine) -> None:
    later = T0 + timedelta(hours=1)
    with session_scope(engine) as session:
        session.add(_session_row(1, expires_at=later, api_key_id="key_a"))
        session.add(_session_row(2, expires_at=later, api_key_id="key_a"))
        session.add(_session_row(3, expires_at=later, api_key_id="key_b"))
    with session_scope(engine) as session:
        assert end_session(session, digest=f"{2:064x}", at=T0) is True
        assert end_key_sessions(session, api_key_id="key_a", at=later) == 1
    with Session(engine) as session:
        ended = {
            n: getattr(find_browser_session(session, digest=f"{n:064x}"), "ended_at", None)
            for n in (1, 2, 3)
        }
    assert ended == {1: later, 2: T0, 3: None}


def test_keys_found_by_digest_on_a_session_or_a_connection_and_listed_oldest_first(
    engine: Engine,
) -> None:
    with session_scope(engine) as session:
        session.add(ApiKey(id="key_new", key_hash="b" * 64, role="admin", created_at=T1))
        session.add(ApiKey(id="key_old", key_hash="a" * 64, role="auditor", created_at=T0))
    with Session(engine) as session:
        found = find_key(session, digest="a" * 64)
        assert found is not None and found.id == "key_old" and found.role == "auditor"
        assert find_key(session, digest="c" * 64) is None
        assert [k.id for k in list_keys(session)] == ["key_old", "key_new"]
    with engine.connect() as conn:
        found = find_key(conn, digest="b" * 64)
        assert found is not None and found.id == "key_new" and found.revoked_at is None
