"""Queries of connection tokens (read on a plain connection, locked for a refresh or a
key rotation) and of the OAuth attempts whose PKCE verifier a rotation re-seals."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine
from sqlmodel import Session

from broker.store.db import session_scope
from broker.store.models import Connection, ConnectionToken, ConnectSession, OAuthAttempt
from broker.store.tickets import open_attempts_with_verifier
from broker.store.tokens import (
    StoredToken,
    all_tokens_for_update,
    stored_token,
    token_for_update,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _connections(session: Session, *ids: str) -> None:
    for cid in ids:
        session.add(Connection(id=cid, user_id="u", connector_id="demo", status="active"))
    session.flush()


def test_a_token_is_read_and_locked_by_connection(engine: Engine) -> None:
    with session_scope(engine) as session:
        _connections(session, "con_1", "con_2")
        session.add(
            ConnectionToken(
                connection_id="con_1",
                key_id="k",
                access_token="sealed-a",
                refresh_token="sealed-r",
                expires_at=T0,
                updated_at=T0,
            )
        )
        session.add(ConnectionToken(connection_id="con_2", key_id="k", access_token="sealed-b"))
    with engine.connect() as conn:
        assert stored_token(conn, connection_id="con_1") == StoredToken(
            "con_1", "sealed-a", "sealed-r", T0, T0
        )
        assert stored_token(conn, connection_id="con_9") is None
    with session_scope(engine) as session:
        row = token_for_update(session, connection_id="con_2")
        assert row is not None and row.access_token == "sealed-b"
        assert token_for_update(session, connection_id="con_9") is None
        assert sorted(r.connection_id for r in all_tokens_for_update(session)) == [
            "con_1",
            "con_2",
        ]


def test_only_unused_attempts_with_a_verifier_are_open(engine: Engine) -> None:
    with session_scope(engine) as session:
        _connections(session, "con_1")
        session.add(ConnectSession(id="cs_1", token_hash="0" * 64, user_id="u", expires_at=T0))
        session.flush()
        for n, (verifier, used_at) in enumerate(
            [("v0", None), (None, None), ("v2", T0), ("v3", None)]
        ):
            session.add(
                OAuthAttempt(
                    id=f"oa_{n}",
                    state_hash=f"{n:064x}",
                    connection_id="con_1",
                    session_id="cs_1",
                    code_verifier=verifier,
                    redirect_uri="r",
                    consent={},
                    expires_at=T0 - timedelta(days=1),
                    used_at=used_at,
                )
            )
    with Session(engine) as session:
        assert sorted(a.id for a in open_attempts_with_verifier(session)) == ["oa_0", "oa_3"]
