"""Queries of ``connection_tokens``: a connection's sealed OAuth tokens, one row each.

The row is also the lock of a token refresh (:func:`token_for_update`). Reading a
token for a delivery needs no ORM session: :func:`stored_token` reads the columns of
a :class:`StoredToken` on a plain connection. When a token is due, and what a refresh
does, is :mod:`broker.flows.tokens`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, bindparam, select
from sqlmodel import Session
from sqlmodel import select as orm_select

from broker.store.models import ConnectionToken

__all__ = [
    "TOKEN_COLUMNS",
    "StoredToken",
    "all_tokens_for_update",
    "stored_token",
    "token_for_update",
]

_TOKENS = ConnectionToken.__table__  # type: ignore[attr-defined]


@dataclass(frozen=True)
class StoredToken:
    """The columns of a ``connection_tokens`` row that reading a token needs."""

    connection_id: str
    access_token: str
    refresh_token: str | None
    expires_at: datetime | None
    updated_at: datetime | None


# The columns of a StoredToken, in its order (a delivery's claim reads them too).
TOKEN_COLUMNS = (
    _TOKENS.c.connection_id,
    _TOKENS.c.access_token,
    _TOKENS.c.refresh_token,
    _TOKENS.c.expires_at,
    _TOKENS.c.updated_at,
)
# Built once: a reused statement keeps its compiled form.
_TOKEN_OF = select(*TOKEN_COLUMNS).where(_TOKENS.c.connection_id == bindparam("connection_id"))


def stored_token(conn: Connection, *, connection_id: str) -> StoredToken | None:
    """The connection's token columns, or None when it has no tokens."""
    found = conn.execute(_TOKEN_OF, {"connection_id": connection_id}).first()
    return None if found is None else StoredToken(*found)


def token_for_update(session: Session, *, connection_id: str) -> ConnectionToken | None:
    """The connection's token row, locked for update (``FOR UPDATE`` where the
    database has it), or None."""
    return session.exec(
        orm_select(ConnectionToken)
        .where(ConnectionToken.connection_id == connection_id)
        .with_for_update()
    ).first()


def all_tokens_for_update(session: Session) -> list[ConnectionToken]:
    """Every token row, locked for update."""
    return list(session.exec(orm_select(ConnectionToken).with_for_update()).all())
