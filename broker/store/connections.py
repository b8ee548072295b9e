"""Connections and their consent records: the queries, as keyword-only functions.

Whoever needs a connection by id, its consent record, or the user's live connection of
a connector reads it here; :func:`broker.flows.connections.require_connection` is the
one place a missing connection becomes a 404.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from sqlmodel import Session, col, select

from broker.core.statuses import LIVE_CONNECTION_STATUSES
from broker.store.models import Connection, ConsentRecord

__all__ = [
    "connection_consents",
    "consent_of",
    "consent_records",
    "get_connection",
    "live_connection",
    "user_connections",
]


def get_connection(session: Session, *, connection_id: str) -> Connection | None:
    """The connection ``connection_id``, or ``None``."""
    return session.get(Connection, connection_id)


def consent_of(session: Session, *, connection: Connection) -> ConsentRecord | None:
    """The consent record the connection is under now (``None``: it has none yet)."""
    if connection.consent_id is None:
        return None
    return session.get(ConsentRecord, connection.consent_id)


def user_connections(session: Session, *, user_id: str) -> list[Connection]:
    """The user's connections, newest first."""
    return list(
        session.exec(
            select(Connection)
            .where(Connection.user_id == user_id)
            .order_by(col(Connection.created_at).desc(), col(Connection.id))
        ).all()
    )


def consent_records(session: Session, *, ids: Iterable[str]) -> dict[str, ConsentRecord]:
    """The consent records of ``ids``, by id (those that exist)."""
    wanted = list(ids)
    if not wanted:
        return {}
    rows = session.exec(select(ConsentRecord).where(col(ConsentRecord.id).in_(wanted))).all()
    return {r.id: r for r in rows}


def connection_consents(session: Session, *, connection_id: str) -> list[ConsentRecord]:
    """Every consent record of the connection, oldest first."""
    return list(
        session.exec(
            select(ConsentRecord)
            .where(ConsentRecord.connection_id == connection_id)
            .order_by(col(ConsentRecord.recorded_at))
        ).all()
    )


def live_connection(
    session: Session, *, user_id: str, connector_id: str, settings: Mapping[str, str] | None
) -> Connection | None:
    """The user's live connection of the connector with the same settings (the same
    account at the third party), the newest if there are several."""
    rows = session.exec(
        select(Connection)
        .where(
            Connection.user_id == user_id,
            Connection.connector_id == connector_id,
            col(Connection.status).in_(LIVE_CONNECTION_STATUSES),
        )
        .order_by(col(Connection.created_at).desc())
    ).all()
    wanted = dict(settings or {})
    return next((c for c in rows if dict(c.settings or {}) == wanted), None)
