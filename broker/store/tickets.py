"""Single-use tickets in the database: look up by digest, check expiry, consume once.

A ticket table has a digest column (the secret's SHA-256, never the secret), an
``expires_at`` and a ``used_at``: connect links and user links (``connect_sessions``,
told apart by ``kind``) and OAuth attempts (``oauth_attempts``, keyed by ``state``).

:func:`claim_ticket` consumes in one conditional ``UPDATE … SET used_at = now WHERE
digest = … AND used_at IS NULL AND expires_at > now RETURNING …``: the database decides,
so of any number of concurrent claims (threads or processes, SQLite or PostgreSQL)
exactly one gets the row. On SQLite the statement takes the write lock before it reads,
so a claim never meets a snapshot another writer has moved on from. Only a refused
claim reads again, to say why (:class:`broker.core.tickets.TicketRefusal`).

The claim is the caller's transaction: a caller that refuses afterwards (a link for
another connector) rolls back and leaves the ticket unused.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import Connection, select, update
from sqlmodel import Session, SQLModel, col
from sqlmodel import select as orm_select

from broker.core.tickets import TicketRefusal, ticket_refusal
from broker.store.models import ConnectSession, OAuthAttempt, from_row

__all__ = [
    "claim_ticket",
    "drop_lapsed_verifiers",
    "drop_verifier",
    "find_ticket",
    "open_attempts_with_verifier",
]

_M = TypeVar("_M", bound=SQLModel)

# The ticket tables and the column holding each one's digest.
_DIGEST_COLUMN: dict[type[SQLModel], str] = {
    ConnectSession: "token_hash",
    OAuthAttempt: "state_hash",
}


def _table(model: type[SQLModel]) -> Any:
    if model not in _DIGEST_COLUMN:
        raise TypeError(f"{model.__name__} is not a ticket table")
    return model.__table__  # type: ignore[attr-defined]


def _conn(db: Session | Connection) -> Connection:
    return db.connection() if isinstance(db, Session) else db


def _matching(model: type[SQLModel], digest: str, match: Mapping[str, Any] | None) -> list[Any]:
    table = _table(model)
    where = [table.c[_DIGEST_COLUMN[model]] == digest]
    where += [table.c[name] == value for name, value in (match or {}).items()]
    return where


def find_ticket(
    db: Session | Connection,
    model: type[_M],
    *,
    digest: str,
    now: datetime,
    match: Mapping[str, Any] | None = None,
) -> _M | TicketRefusal:
    """The usable ticket with ``digest`` (and the column values in ``match``, such as
    ``{"kind": "user"}``), left unused; or why there is none. For pages that show what
    a ticket is for before it is claimed."""
    table = _table(model)
    query = select(table).where(*_matching(model, digest, match))
    found = _conn(db).execute(query).mappings().first()
    if found is None:
        return TicketRefusal.UNKNOWN
    refusal = ticket_refusal(
        found=True, used_at=found["used_at"], expires_at=found["expires_at"], now=now
    )
    if refusal is not None:
        return refusal
    return from_row(model, dict(found))


def claim_ticket(
    db: Session | Connection,
    model: type[_M],
    *,
    digest: str,
    now: datetime,
    match: Mapping[str, Any] | None = None,
) -> _M | TicketRefusal:
    """Consume the ticket with ``digest`` (and ``match``) at ``now``: the row as it is
    now (``used_at`` set), or why it cannot be used. Only one claim of a ticket ever
    returns a row; the rest get :attr:`TicketRefusal.USED`."""
    table = _table(model)
    conn = _conn(db)
    claimed = (
        conn.execute(
            update(table)
            .where(
                *_matching(model, digest, match),
                table.c.used_at.is_(None),
                table.c.expires_at > now,
            )
            .values(used_at=now)
            .returning(*table.c)
        )
        .mappings()
        .first()
    )
    if claimed is not None:
        return from_row(model, dict(claimed))
    found = find_ticket(conn, model, digest=digest, now=now, match=match)
    # usable when read again: it was not when the update ran (a concurrent claim
    # committed in between is ``used`` by now, and one that expired stays expired)
    return found if isinstance(found, TicketRefusal) else TicketRefusal.USED


def open_attempts_with_verifier(session: Session) -> list[OAuthAttempt]:
    """The unused OAuth attempts that still hold a sealed PKCE verifier (an attempt
    refused as expired is unused but has none left), expired or not."""
    return list(
        session.exec(
            orm_select(OAuthAttempt).where(
                col(OAuthAttempt.used_at).is_(None), col(OAuthAttempt.code_verifier).is_not(None)
            )
        ).all()
    )


_ATTEMPTS = OAuthAttempt.__table__  # type: ignore[attr-defined]


def drop_verifier(
    session: Session, *, attempt_id: str | None = None, digest: str | None = None
) -> None:
    """Erase the sealed PKCE verifier of the attempt with ``attempt_id`` or with the
    state ``digest``: a spent attempt keeps nothing it could be redeemed with."""
    if (attempt_id is None) == (digest is None):
        raise TypeError("drop_verifier takes attempt_id or digest, one of them")
    which = (
        _ATTEMPTS.c.id == attempt_id if attempt_id is not None else _ATTEMPTS.c.state_hash == digest
    )
    session.connection().execute(update(_ATTEMPTS).where(which).values(code_verifier=None))


def drop_lapsed_verifiers(session: Session, *, now: datetime) -> None:
    """Erase the verifiers of the attempts that expired by ``now`` unanswered."""
    session.connection().execute(
        update(_ATTEMPTS)
        .where(_ATTEMPTS.c.expires_at <= now, _ATTEMPTS.c.code_verifier.is_not(None))
        .values(code_verifier=None)
    )
