"""Queries of ``idempotency_keys``: one row per (principal, route, key). When a key is
claimed, replayed or given up is decided in :mod:`broker.flows.idempotency`."""

from __future__ import annotations

from datetime import datetime

from sqlmodel import Session, col, delete, select

from broker.store.idempotency_models import IdempotencyKey

__all__ = ["delete_keys_before", "find_idempotency_key"]


def find_idempotency_key(
    session: Session, *, principal: str, route: str, key: str
) -> IdempotencyKey | None:
    """The row of ``key`` sent by ``principal`` to ``route``, if any."""
    return session.exec(
        select(IdempotencyKey).where(
            IdempotencyKey.principal == principal,
            IdempotencyKey.route == route,
            IdempotencyKey.key == key,
        )
    ).first()


def delete_keys_before(session: Session, *, cutoff: datetime) -> None:
    """Delete the keys created before ``cutoff``."""
    session.exec(delete(IdempotencyKey).where(col(IdempotencyKey.created_at) < cutoff))
