"""The conditional updates that make a connection's revocation happen once, and the
read of revocations left half-done (:mod:`broker.flows.revoke` holds the rest: when a
claim may be taken over, what the provider is told, what is written with it).

A revocation claims the connection (status ``revoking``, ``updated_at`` the claim's
time) and finishes only while the claim is still the one it made; each update says
whether it changed the row, so of concurrent callers exactly one goes on.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlmodel import Session, col, select, update

from broker.core.statuses import ConnectionStatus
from broker.store.models import Connection

__all__ = ["claim_revocation", "finish_revocation", "stale_revocations"]

REVOKING = ConnectionStatus.REVOKING


def claim_revocation(
    session: Session,
    *,
    connection_id: str,
    status: str,
    updated_at: datetime | None = None,
    now: datetime,
) -> bool:
    """Move the connection from ``status`` (and, given ``updated_at``, only if it was
    last updated then: a stale claim taken over) to ``revoking`` at ``now``; True if
    this call did."""
    stmt = update(Connection).where(
        col(Connection.id) == connection_id, col(Connection.status) == status
    )
    if updated_at is not None:
        stmt = stmt.where(col(Connection.updated_at) == updated_at)
    return bool(session.exec(stmt.values(status=REVOKING, updated_at=now)).rowcount == 1)


def finish_revocation(
    session: Session,
    *,
    connection_id: str,
    claimed_at: datetime,
    now: datetime,
    last_error: str | None = None,
) -> bool:
    """Mark the connection ``revoked`` at ``now`` (with ``last_error``, if given) if it
    is still ``revoking`` under the claim made at ``claimed_at``; True if this call did."""
    values: dict[str, Any] = {
        "status": ConnectionStatus.REVOKED,
        "revoked_at": now,
        "updated_at": now,
    }
    if last_error is not None:
        values["last_error"] = last_error
    result = session.exec(
        update(Connection)
        .where(
            col(Connection.id) == connection_id,
            col(Connection.status) == REVOKING,
            col(Connection.updated_at) == claimed_at,
        )
        .values(**values)
    )
    return bool(result.rowcount == 1)


def stale_revocations(session: Session, *, claimed_before: datetime) -> list[str]:
    """The connections still ``revoking`` under a claim made before ``claimed_before``."""
    return list(
        session.exec(
            select(Connection.id).where(
                col(Connection.status) == REVOKING, col(Connection.updated_at) < claimed_before
            )
        ).all()
    )
