"""The rows that name a user, for their erasure (GDPR Art. 17; the rules are in
``broker.flows.erasure``): finding them, and stripping or deleting them in the
caller's transaction."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, Engine, Text, cast, delete, or_, select, update

from broker.core.statuses import ConnectionStatus
from broker.store.models import (
    BrowserSessionRecord,
    ConnectionToken,
    ConnectSession,
    ConsentRecord,
    OAuthAttempt,
    Transfer,
    UserPreference,
)
from broker.store.models import Connection as ConnectionRow
from broker.store.webhook_models import WebhookDelivery

__all__ = ["checkpoint_wal", "holds_user", "scrub_user", "unrevoked_connections"]

_DONE = (ConnectionStatus.REVOKED,)
_C = ConnectionRow.__table__  # type: ignore[attr-defined]
_T = Transfer.__table__  # type: ignore[attr-defined]
_R = ConsentRecord.__table__  # type: ignore[attr-defined]
_S = ConnectSession.__table__  # type: ignore[attr-defined]
_A = OAuthAttempt.__table__  # type: ignore[attr-defined]
_K = ConnectionToken.__table__  # type: ignore[attr-defined]
_P = UserPreference.__table__  # type: ignore[attr-defined]
_B = BrowserSessionRecord.__table__  # type: ignore[attr-defined]
_W = WebhookDelivery.__table__  # type: ignore[attr-defined]


def _ids(conn: Connection, table: Any, user_id: str) -> list[str]:
    return [
        str(i) for i in conn.execute(select(table.c.id).where(table.c.user_id == user_id)).scalars()
    ]


def unrevoked_connections(conn: Connection, *, user_id: str) -> list[str]:
    """The ids of the user's connections that are not revoked yet."""
    rows = conn.execute(select(_C.c.id).where(_C.c.user_id == user_id, _C.c.status.not_in(_DONE)))
    return [str(c) for (c,) in rows]


def scrub_user(conn: Connection, *, user_id: str, mark: str, actor_prefix: str) -> dict[str, int]:
    """Strip or delete every row that links to the user (their id becomes ``mark``, and
    so does their id in a transfer actor ``actor_prefix + user_id``); returns counts
    per table."""
    connections = _ids(conn, _C, user_id)
    sessions = _ids(conn, _S, user_id)
    counts: dict[str, int] = {"connections": len(connections)}
    conn.execute(
        update(_T)
        .where(_T.c.actor == actor_prefix + user_id, _T.c.user_id == user_id)
        .values(actor=actor_prefix + mark)
    )
    conn.execute(  # format 1: an unsalted digest can be confirmed by guessing: gone
        update(_T)
        .where(_T.c.user_id == user_id, _T.c.payload_salt.is_(None))
        .values(payload_sha256=None)
    )
    counts["transfers"] = conn.execute(
        update(_T)
        .where(_T.c.user_id == user_id)
        .values(user_id=mark, payload_salt=None, payload_sealed=None, idempotency_key=None)
    ).rowcount
    counts["consent_records"] = conn.execute(
        update(_R)
        .where(_R.c.user_id == user_id)
        .values(user_id=mark, client_ip=None, user_agent=None)
    ).rowcount
    if connections or sessions:
        conn.execute(
            delete(_A).where(
                or_(_A.c.connection_id.in_(connections), _A.c.session_id.in_(sessions))
            )
        )
    if connections:
        conn.execute(delete(_K).where(_K.c.connection_id.in_(connections)))
    counts["webhook_deliveries"] = conn.execute(
        delete(_W).where(
            or_(
                _W.c.connection_id.in_(connections),
                cast(_W.c.payload, Text).contains(f'"{user_id}"', autoescape=True),
            )
        )
    ).rowcount
    counts["connect_sessions"] = conn.execute(delete(_S).where(_S.c.user_id == user_id)).rowcount
    conn.execute(
        update(_C)
        .where(_C.c.user_id == user_id)
        .values(user_id=mark, settings=None, last_error=None)
    )
    counts["preferences"] = conn.execute(delete(_P).where(_P.c.user_id == user_id)).rowcount
    counts["browser_sessions"] = conn.execute(
        delete(_B).where(_B.c.kind == "user", _B.c.subject == user_id)
    ).rowcount
    return counts


def holds_user(conn: Connection, *, user_id: str) -> bool:
    for table, column in ((_C, "user_id"), (_T, "user_id"), (_R, "user_id"), (_S, "user_id"),
                          (_P, "user_id"), (_B, "subject")):  # fmt: skip
        if conn.execute(select(1).where(table.c[column] == user_id).limit(1)).first():
            return True
    return False


def checkpoint_wal(engine: Engine) -> None:
    """On SQLite, move the WAL's pages into the database and truncate it, so that old
    row versions do not linger in the WAL file; nothing elsewhere."""
    if engine.dialect.name == "sqlite":
        with engine.connect() as conn:
            conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
