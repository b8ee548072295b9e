"""Queries of ``api_keys``: a key is found by its SHA-256 digest (the raw key is never
stored). Whether a key is valid for a request is the caller's decision
(:mod:`broker.flows.keys`)."""

from __future__ import annotations

from sqlalchemy import Connection, bindparam
from sqlmodel import Session, col, select

from broker.store.models import ApiKey, from_row

__all__ = ["find_key", "list_keys"]

_KEYS = ApiKey.__table__  # type: ignore[attr-defined]
# Built once: a statement object reused keeps its compiled form and cache key.
_BY_HASH = _KEYS.select().where(_KEYS.c.key_hash == bindparam("key_hash"))


def find_key(db: Session | Connection, *, digest: str) -> ApiKey | None:
    """The key whose digest is ``digest``, revoked or not, as a detached row (read it;
    do not add it to a session). One indexed read: on a plain connection it needs no
    ORM session, as every API request's authentication does."""
    conn = db.connection() if isinstance(db, Session) else db
    found = conn.execute(_BY_HASH, {"key_hash": digest}).first()
    return None if found is None else from_row(ApiKey, found._mapping)


def list_keys(session: Session) -> list[ApiKey]:
    """Every key, oldest first."""
    return list(session.exec(select(ApiKey).order_by(col(ApiKey.created_at))).all())
