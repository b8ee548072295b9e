"""Access tokens for delivery: read, and refreshed one at a time per connection.

A refresh holds the connection's in-process lock and, on PostgreSQL, the
token row's ``FOR UPDATE`` lock, so concurrent transfers (in this process or
another) wait for one refresh instead of racing. The rotated refresh token is
committed with the new access token before that access token is used.
"""

from __future__ import annotations

from datetime import timedelta

from sqlmodel import Session, select

from broker.core.errors import ConnectionNotActive, ProviderError
from broker.core.oauth import refresh_tokens
from broker.flows.connect import client_credentials
from broker.flows.connection_setup import provider_oauth
from broker.runtime import Runtime
from broker.store.audit import append_event
from broker.store.db import session_scope
from broker.store.models import Connection, ConnectionToken

__all__ = ["access_token", "refresh_access_token"]


def _open(rt: Runtime, row: ConnectionToken, kind: str) -> str:
    sealed = row.access_token if kind == "access_token" else row.refresh_token
    assert sealed is not None
    return rt.vault.open(sealed, connection_id=row.connection_id, kind=kind)


def _fresh(rt: Runtime, row: ConnectionToken) -> bool:
    if row.expires_at is None:
        return True
    return row.expires_at > rt.clock() + timedelta(seconds=rt.settings.token_refresh_skew)


def access_token(rt: Runtime, connection_id: str) -> str:
    """A usable access token, refreshing first if it has expired."""
    with Session(rt.engine) as session:
        row = session.get(ConnectionToken, connection_id)
    if row is None:
        raise ConnectionNotActive("the connection has no tokens")
    token = _open(rt, row, "access_token")
    if _fresh(rt, row):
        return token
    return refresh_access_token(rt, connection_id, stale=token)


def _mark_reconsent(rt: Runtime, connection_id: str, reason: str) -> None:
    with session_scope(rt.engine) as session:
        conn = session.get(Connection, connection_id)
        if conn is not None and conn.status == "active":
            conn.status = "reconsent_required"
            conn.last_error = reason[:500]
            conn.updated_at = rt.clock()
            session.add(conn)


def refresh_access_token(rt: Runtime, connection_id: str, *, stale: str | None) -> str:
    """Refresh unless another caller already replaced ``stale``; returns the new token."""
    with rt.connection_lock(connection_id), session_scope(rt.engine) as session:
        row = session.exec(
            select(ConnectionToken)
            .where(ConnectionToken.connection_id == connection_id)
            .with_for_update()
        ).first()
        if row is None:
            raise ConnectionNotActive("the connection has no tokens")
        current = _open(rt, row, "access_token")
        if current != stale and _fresh(rt, row):
            return current  # someone refreshed while we waited
        conn = session.get(Connection, connection_id)
        assert conn is not None
        connector = rt.registry.get(conn.connector_id)
        if row.refresh_token is None:
            reason = "the access token expired and the provider issued no refresh token"
            session.rollback()
            _mark_reconsent(rt, connection_id, reason)
            raise ProviderError(reason + "; the user must connect again")
        try:
            creds = client_credentials(connector)
            tokens = refresh_tokens(
                rt.http,
                provider_oauth(connector, conn.settings, creds),
                creds,
                refresh_token=_open(rt, row, "refresh_token"),
            )
        except ProviderError as exc:
            if exc.details.get("provider_error") in ("invalid_grant", "unauthorized_client"):
                session.rollback()
                _mark_reconsent(rt, connection_id, exc.message)
            raise
        now = rt.clock()
        row.access_token = rt.vault.seal(
            tokens.access_token, connection_id=connection_id, kind="access_token"
        )
        if tokens.refresh_token:
            row.refresh_token = rt.vault.seal(
                tokens.refresh_token, connection_id=connection_id, kind="refresh_token"
            )
        row.key_id = rt.vault.ring.active
        row.expires_at = tokens.expires_at
        row.scope = tokens.scope or row.scope
        row.updated_at = now
        session.add(row)
        append_event(
            session,
            head_file=rt.settings.audit_head_file,
            time=now,
            event="token.refreshed",
            actor="broker",
            user_id=conn.user_id,
            connector_id=conn.connector_id,
            connection_id=connection_id,
            details={"rotated": tokens.refresh_token is not None},
        )
        return tokens.access_token
