"""Erasure of a user (GDPR Art. 17) that leaves a log which still verifies.

``erase_user`` first revokes each of the user's live connections through the usual
revocation (tokens revoked at the provider, destroyed here, consent withdrawn, queued
transfers cancelled, all logged). Then, in one transaction under the chain head lock:

- the user's **subject key** is destroyed: their format-2 log entries name a pseudonym
  nobody can map back any more;
- rows kept for the counts are stripped of what links them to the person: transfers,
  connections and consent records keep their row (recipient, categories, field paths,
  purpose, status, times) with ``user_id`` replaced by ``~<pseudonym>``; transfers
  lose their payload salt (their salted digest can no longer be checked against a
  guess), sealed payload and idempotency key (format-1 transfers: their unsalted digest);
  consent records their client IP and user agent; connections their settings;
- what exists only for the person is deleted: tokens, OAuth attempts, connect and
  browser sessions, objections (``user_preferences``) and webhook deliveries naming them;
- a ``subject.erased`` entry is appended, naming the erased pseudonym only.

The per-recipient summary and every count by recipient stay as they were. Erasing again,
or erasing a user the broker never knew, answers ``nothing_held`` and changes nothing.
Format-1 entries (written before the ``log.format`` handover) are never rewritten: they
keep the clear user id and the unsalted payload digest (docs/auditors.md).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, Text, cast, delete, or_, select, update

from broker.core.pseudonyms import (
    ERASED_EVENT,
    ERASED_MARK,
    USER_ACTOR,
    new_subject_key,
    pseudonym,
)
from broker.core.statuses import ConnectionStatus
from broker.flows.connect import validate_user_id
from broker.flows.revoke import revoke_connection
from broker.runtime import Runtime
from broker.store.audit import append_event, lock_head
from broker.store.db import session_scope
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
from broker.store.subjects import destroy_key, forget, lookup
from broker.store.webhook_models import WebhookDelivery

__all__ = ["NOTHING_HELD", "erase_user"]

NOTHING_HELD = "the broker holds no data of this user (never known, or already erased)"
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


def _revoke_live(rt: Runtime, user_id: str, actor: str) -> list[str]:
    """Revoke every connection of the user not revoked yet; returns their ids."""
    with rt.engine.connect() as conn:
        live = conn.execute(
            select(_C.c.id).where(_C.c.user_id == user_id, _C.c.status.not_in(_DONE))
        ).all()
    for (connection_id,) in live:
        revoke_connection(rt, connection_id, actor=actor)
    return [str(c) for (c,) in live]


def _scrub(conn: Connection, user_id: str, mark: str) -> dict[str, int]:
    """Strip or delete every row that links to the user; returns counts per table."""
    connections = _ids(conn, _C, user_id)
    sessions = _ids(conn, _S, user_id)
    counts: dict[str, int] = {"connections": len(connections)}
    actor = USER_ACTOR + user_id
    conn.execute(
        update(_T)
        .where(_T.c.actor == actor, _T.c.user_id == user_id)
        .values(actor=USER_ACTOR + mark)
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


def _held(conn: Connection, user_id: str) -> bool:
    for table, column in ((_C, "user_id"), (_T, "user_id"), (_R, "user_id"), (_S, "user_id"),
                          (_P, "user_id"), (_B, "subject")):  # fmt: skip
        if conn.execute(select(1).where(table.c[column] == user_id).limit(1)).first():
            return True
    return False


def erase_user(rt: Runtime, user_id: Any, *, actor: str) -> dict[str, Any]:
    """Erase ``user_id`` (see the module docstring). Returns ``{"user_id", "status":
    "erased" | "nothing_held", "message", "pseudonym", "revoked", "counts"}``."""
    user_id = validate_user_id(user_id)
    with rt.engine.connect() as conn:
        known = lookup(conn, user_id) is not None or _held(conn, user_id)
    if not known:
        return {"user_id": user_id, "status": "nothing_held", "message": NOTHING_HELD,
                "pseudonym": None, "revoked": [], "counts": {}}  # fmt: skip
    revoked = _revoke_live(rt, user_id, actor)
    with session_scope(rt.engine) as session:
        lock_head(session)  # no entry is sealed for the user while the key goes
        conn = session.connection()
        name = destroy_key(conn, user_id)
        if name is None:  # only format-1 traces: a one-off pseudonym, never stored
            name = pseudonym(new_subject_key(), user_id)
        counts = _scrub(conn, user_id, ERASED_MARK + name)
        entry = append_event(
            session,
            head_file=rt.settings.audit_head_file,
            time=rt.clock(),
            event=ERASED_EVENT,
            actor=actor,
            user_id=name,
            outcome="erased",
            details={"revoked_connections": len(revoked), **counts},
        )
    forget(rt.engine, user_id)
    if rt.engine.dialect.name == "sqlite":  # the old row versions leave the WAL file too
        with rt.engine.connect() as conn:
            conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    return {
        "user_id": user_id,
        "status": "erased",
        "message": f"erased: {len(revoked)} connection(s) revoked, subject key destroyed",
        "pseudonym": name,
        "revoked": revoked,
        "counts": counts,
        "audit_seq": entry.seq,
    }
