"""Queries of ``browser_sessions``: the server side of the ``/me`` and ``/audit`` cookies.

A row is found by its token digest (the cookie's SHA-256, never the cookie); ending a
session sets ``ended_at``. Whether a row still serves is the caller's decision
(:mod:`broker.flows.browser_sessions`).
"""

from __future__ import annotations

from datetime import datetime

from sqlmodel import Session, col, delete, select, update

from broker.store.models import BrowserSessionRecord

__all__ = [
    "delete_expired_sessions",
    "end_key_sessions",
    "end_session",
    "find_browser_session",
]


def delete_expired_sessions(session: Session, *, now: datetime) -> None:
    """Delete the rows that expired at or before ``now``."""
    session.exec(delete(BrowserSessionRecord).where(col(BrowserSessionRecord.expires_at) <= now))


def find_browser_session(session: Session, *, digest: str) -> BrowserSessionRecord | None:
    """The row whose token digest is ``digest``, whatever its kind, end or expiry."""
    return session.exec(
        select(BrowserSessionRecord).where(BrowserSessionRecord.token_hash == digest)
    ).first()


def end_session(session: Session, *, digest: str, at: datetime) -> bool:
    """Set ``ended_at`` of the not yet ended row with token digest ``digest``; whether
    there was one."""
    result = session.exec(
        update(BrowserSessionRecord)
        .where(
            col(BrowserSessionRecord.token_hash) == digest,
            col(BrowserSessionRecord.ended_at).is_(None),
        )
        .values(ended_at=at)
    )
    return bool(result.rowcount == 1)


def end_key_sessions(session: Session, *, api_key_id: str, at: datetime) -> int:
    """Set ``ended_at`` of every not yet ended session opened with ``api_key_id``; how many."""
    result = session.exec(
        update(BrowserSessionRecord)
        .where(
            col(BrowserSessionRecord.api_key_id) == api_key_id,
            col(BrowserSessionRecord.ended_at).is_(None),
        )
        .values(ended_at=at)
    )
    return int(result.rowcount)
