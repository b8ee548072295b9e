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

from broker.core.pseudonyms import (
    ERASED_EVENT,
    ERASED_MARK,
    USER_ACTOR,
    new_subject_key,
    pseudonym,
)
from broker.flows.connect import validate_user_id
from broker.flows.revoke import revoke_connection
from broker.runtime import Runtime
from broker.store.audit import append_event, lock_head
from broker.store.db import session_scope
from broker.store.erasure import checkpoint_wal, holds_user, scrub_user, unrevoked_connections
from broker.store.subjects import destroy_key, forget, lookup

__all__ = ["NOTHING_HELD", "erase_user"]

NOTHING_HELD = "the broker holds no data of this user (never known, or already erased)"


def _revoke_live(rt: Runtime, user_id: str, actor: str) -> list[str]:
    """Revoke every connection of the user not revoked yet; returns their ids."""
    with rt.engine.connect() as conn:
        live = unrevoked_connections(conn, user_id=user_id)
    for connection_id in live:
        revoke_connection(rt, connection_id, actor=actor)
    return live


def erase_user(rt: Runtime, user_id: Any, *, actor: str) -> dict[str, Any]:
    """Erase ``user_id`` (see the module docstring). Returns ``{"user_id", "status":
    "erased" | "nothing_held", "message", "pseudonym", "revoked", "counts"}``."""
    user_id = validate_user_id(user_id)
    with rt.engine.connect() as conn:
        known = lookup(conn, user_id) is not None or holds_user(conn, user_id=user_id)
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
        mark = ERASED_MARK + name
        counts = scrub_user(conn, user_id=user_id, mark=mark, actor_prefix=USER_ACTOR)
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
    checkpoint_wal(rt.engine)  # the old row versions leave SQLite's WAL file too
    return {
        "user_id": user_id,
        "status": "erased",
        "message": f"erased: {len(revoked)} connection(s) revoked, subject key destroyed",
        "pseudonym": name,
        "revoked": revoked,
        "counts": counts,
        "audit_seq": entry.seq,
    }
