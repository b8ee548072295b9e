"""Queries of connections waiting for the host's confirmation
(``pending_confirmation``): the conditional activation and the overdue ones. Whether
a connection may still be confirmed (its deadline) is decided in
:mod:`broker.flows.confirm`."""

from __future__ import annotations

from datetime import datetime

from sqlmodel import Session, col, select, update

from broker.core.statuses import ConnectionStatus
from broker.store.models import Connection

__all__ = ["activate_pending", "overdue_pending"]

_PENDING = ConnectionStatus.PENDING_CONFIRMATION


def activate_pending(session: Session, *, connection_id: str, at: datetime) -> bool:
    """Make the connection ``active`` at ``at`` (its deadline cleared) if it is still
    ``pending_confirmation``; whether it was (a concurrent confirm or revoke wins)."""
    result = session.exec(
        update(Connection)
        .where(col(Connection.id) == connection_id, col(Connection.status) == _PENDING)
        .values(status=ConnectionStatus.ACTIVE, activated_at=at, updated_at=at, confirm_by=None)
    )
    return bool(result.rowcount == 1)


def overdue_pending(session: Session, *, now: datetime) -> list[str]:
    """Ids of the ``pending_confirmation`` connections whose deadline is at or before
    ``now``."""
    return list(
        session.exec(
            select(Connection.id).where(
                col(Connection.status) == _PENDING, col(Connection.confirm_by) <= now
            )
        ).all()
    )
