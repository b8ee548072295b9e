"""The rows a transfer's accept and delivery read and write, as keyword-only queries.

The hot statements are built once with bind parameters (a reused statement keeps
its compiled form and cache key) and run on SQLAlchemy Core. An accept reads the
connection with its grant and the user's objections in one statement and inserts
the row with its categories; a delivery reads its transfer with its connection and
token in one statement, and writes its outcome with one conditional update (still
pending and, with an owner, still leased to it) returning the row as it now stands.
What a request or an outcome *means* (the gateway's verdict, the audit event, a
retry) is decided in ``broker.flows.share`` and ``broker.flows.engine``.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import Connection as DbConnection
from sqlalchemy import bindparam, insert, select, update
from sqlmodel import Session

from broker.core.statuses import TransferStatus
from broker.store.models import (
    Connection,
    ConnectionToken,
    ConsentRecord,
    Transfer,
    TransferCategory,
    UserPreference,
    from_row,
)
from broker.store.tokens import TOKEN_COLUMNS, StoredToken

__all__ = [
    "LINK_COLUMNS",
    "OUTCOME_COLUMNS",
    "ConnectionRow",
    "cancel_unstarted",
    "connection_row",
    "connection_rows",
    "get_transfer",
    "insert_transfer",
    "link_and_grant",
    "record_outcome",
    "transfer_by_key",
    "transfer_with_connection",
    "unstarted_ids",
]

_T = Transfer.__table__  # type: ignore[attr-defined]
_C = Connection.__table__  # type: ignore[attr-defined]
_TOKENS = ConnectionToken.__table__  # type: ignore[attr-defined]
_CONSENTS = ConsentRecord.__table__  # type: ignore[attr-defined]
_PREFS = UserPreference.__table__  # type: ignore[attr-defined]
_CATEGORIES = TransferCategory.__table__  # type: ignore[attr-defined]

LINK_COLUMNS = ("id", "user_id", "connector_id", "status", "consent_id", "settings", "last_error")
"""What an accept reads of the connection, in this order (then objections, grant)."""

OUTCOME_COLUMNS = (
    "status",
    "reason",
    "attempts",
    "response_status",
    "response_id",
    "payload_sealed",
    "lease_owner",
    "lease_until",
    "next_attempt_at",
    "completed_at",
)
"""What :func:`record_outcome` writes: every one of them, each time."""


class ConnectionRow(NamedTuple):
    """What a delivery reads of its connection as it starts (no ORM object): its
    status, settings and token (None when the connection holds none), so the delivery
    reads no token of its own."""

    status: str
    settings: dict[str, str] | None
    token: StoredToken | None = None


_FINISH = (
    update(_T)
    .where(_T.c.id == bindparam("t_id"), _T.c.status == TransferStatus.PENDING)
    .values({_T.c[n]: bindparam(f"v_{n}", type_=_T.c[n].type) for n in OUTCOME_COLUMNS})
    .returning(*_T.columns)
)
_FINISH_HELD = _FINISH.where(_T.c.lease_owner == bindparam("owner"))
_BY_ID = select(_T).where(_T.c.id == bindparam("t_id"))

_TOKEN_LABELS = tuple(f"k_{c.name}" for c in TOKEN_COLUMNS)
_WITH_TOKEN = _C.outerjoin(_TOKENS, _TOKENS.c.connection_id == _C.c.id)
_CONNECTION_BY_ID = (
    select(_C.c.status, _C.c.settings, *TOKEN_COLUMNS)
    .select_from(_WITH_TOKEN)
    .where(_C.c.id == bindparam("c_id"))
)
_CONNECTIONS_BY_ID = (
    select(_C.c.id, _C.c.status, _C.c.settings, *TOKEN_COLUMNS)
    .select_from(_WITH_TOKEN)
    .where(_C.c.id.in_(bindparam("c_ids", expanding=True)))
)
_TRANSFER_AND_CONNECTION = (
    select(
        _T,
        _C.c.status.label("c_status"),
        _C.c.settings.label("c_settings"),
        *(c.label(label) for c, label in zip(TOKEN_COLUMNS, _TOKEN_LABELS, strict=True)),
    )
    .select_from(
        _T.outerjoin(_C, _C.c.id == _T.c.connection_id).outerjoin(
            _TOKENS, _TOKENS.c.connection_id == _T.c.connection_id
        )
    )
    .where(_T.c.id == bindparam("t_id"))
)


_LINK_AND_GRANT = (  # and the user's objections (user_preferences), in the same read
    select(*(_C.c[n] for n in LINK_COLUMNS), _PREFS.c.object_to, _CONSENTS.c.granted_categories)
    .select_from(
        _C.outerjoin(_CONSENTS, _CONSENTS.c.id == _C.c.consent_id).outerjoin(
            _PREFS, _PREFS.c.user_id == _C.c.user_id
        )
    )
    .where(_C.c.id == bindparam("c_id"))
)
_INSERT_TRANSFER = insert(_T)
_INSERT_CATEGORIES = insert(_CATEGORIES)


def link_and_grant(db: DbConnection, *, connection_id: str) -> tuple[Any, ...] | None:
    """The connection's ``LINK_COLUMNS``, then the user's objections and the granted
    categories of its consent (each None when absent), in one read; None if the
    connection does not exist."""
    row = db.execute(_LINK_AND_GRANT, {"c_id": connection_id}).first()
    return tuple(row) if row is not None else None


def transfer_by_key(session: Session, *, connection_id: str, key: str) -> Transfer | None:
    """The connection's transfer recorded under the caller's idempotency ``key``."""
    query = select(_T).where(_T.c.connection_id == connection_id, _T.c.idempotency_key == key)
    row = session.connection().execute(query).mappings().first()
    return from_row(Transfer, row) if row is not None else None


def insert_transfer(
    db: DbConnection, *, row: Mapping[str, Any], categories: Collection[Mapping[str, Any]]
) -> None:
    """Insert a new transfer row (every column) and its category rows."""
    db.execute(_INSERT_TRANSFER, [row])
    if categories:
        db.execute(_INSERT_CATEGORIES, list(categories))


def _token(values: tuple[Any, ...]) -> StoredToken | None:
    return StoredToken(*values) if values[0] is not None else None


def connection_row(db: DbConnection, *, connection_id: str) -> ConnectionRow | None:
    """The connection with its token, or None if it does not exist."""
    row = db.execute(_CONNECTION_BY_ID, {"c_id": connection_id}).first()
    if row is None:
        return None
    return ConnectionRow(row[0], row[1], _token(tuple(row[2:])))


def connection_rows(
    db: DbConnection, *, connection_ids: Collection[str]
) -> dict[str, ConnectionRow]:
    """The connections of a batch, by id, in one read (an absent id no longer exists)."""
    if not connection_ids:
        return {}
    rows = db.execute(_CONNECTIONS_BY_ID, {"c_ids": list(connection_ids)}).all()
    return {r[0]: ConnectionRow(r[1], r[2], _token(tuple(r[3:]))) for r in rows}


def transfer_with_connection(
    db: DbConnection, *, transfer_id: str
) -> tuple[Transfer | None, ConnectionRow | None]:
    """The transfer and its connection (with its token), in one read."""
    row = db.execute(_TRANSFER_AND_CONNECTION, {"t_id": transfer_id}).first()
    if row is None:
        return None, None
    values = row._mapping
    transfer = from_row(Transfer, {c.name: values[c] for c in _T.columns})
    if values["c_status"] is None:
        return transfer, None
    token = _token(tuple(values[label] for label in _TOKEN_LABELS))
    return transfer, ConnectionRow(values["c_status"], values["c_settings"], token)


def record_outcome(
    db: DbConnection,
    *,
    transfer_id: str,
    owner: str | None,
    values: Mapping[str, Any],
) -> tuple[Transfer, bool]:
    """Write ``values`` (every one of ``OUTCOME_COLUMNS``) if the transfer is still
    pending and, with ``owner``, still leased to it. Returns the row as it now stands
    and whether this write won (False: someone else ended it; nothing changed)."""
    params = {f"v_{k}": values[k] for k in OUTCOME_COLUMNS} | {"t_id": transfer_id}
    stmt = _FINISH if owner is None else _FINISH_HELD
    if owner is not None:
        params["owner"] = owner
    row = db.execute(stmt, params).mappings().first()
    if row is not None:
        return from_row(Transfer, row), True
    return from_row(Transfer, db.execute(_BY_ID, {"t_id": transfer_id}).mappings().one()), False


def get_transfer(session: Session, *, transfer_id: str, fresh: bool = False) -> Transfer | None:
    """The transfer, or None; ``fresh``: read again even if the session holds it."""
    return session.get(Transfer, transfer_id, populate_existing=fresh)


def cancel_unstarted(session: Session, *, transfer_id: str, now: datetime, reason: str) -> bool:
    """End a pending transfer no worker holds as ``cancelled`` (its payload erased);
    False if it started or ended meanwhile."""
    result = session.connection().execute(
        update(_T)
        .where(
            _T.c.id == transfer_id,
            _T.c.status == TransferStatus.PENDING,
            _T.c.lease_owner.is_(None),
        )
        .values(
            status=TransferStatus.CANCELLED,
            reason=reason,
            completed_at=now,
            payload_sealed=None,
            next_attempt_at=None,
        )
    )
    return result.rowcount == 1


def unstarted_ids(session: Session, *, connection_id: str) -> list[str]:
    """The connection's pending transfers that no worker holds."""
    query = select(_T.c.id).where(
        _T.c.connection_id == connection_id,
        _T.c.status == TransferStatus.PENDING,
        _T.c.lease_owner.is_(None),
    )
    return list(session.connection().execute(query).scalars())
