"""Queries behind the user's notices of changed terms: the policy changes of a
connector after a moment, the user's connections to show them on, and whether a user
has a connection to a connector. Which change is worth a notice, and to whom, is
decided in :mod:`broker.flows.notices`.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from sqlmodel import Session, col, select

from broker.store.models import Connection
from broker.store.policy_models import PolicyChange

__all__ = ["has_connection_to", "policy_changes_after", "user_connections"]


def policy_changes_after(
    session: Session, *, connector_id: str, after: datetime | None
) -> list[PolicyChange]:
    """The connector's policy changes detected after ``after`` (all when None), oldest
    first."""
    query = select(PolicyChange).where(PolicyChange.connector_id == connector_id)
    if after is not None:
        query = query.where(col(PolicyChange.detected_at) > after)
    return list(session.exec(query.order_by(col(PolicyChange.detected_at))).all())


def user_connections(
    session: Session,
    *,
    user_id: str,
    statuses: Iterable[str],
    connection_ids: Iterable[str] | None = None,
) -> list[Connection]:
    """The user's connections with one of ``statuses`` (and among ``connection_ids``
    when given), oldest first."""
    query = select(Connection).where(
        Connection.user_id == user_id, col(Connection.status).in_(list(statuses))
    )
    if connection_ids is not None:
        query = query.where(col(Connection.id).in_(list(connection_ids)))
    return list(session.exec(query.order_by(col(Connection.created_at))).all())


def has_connection_to(session: Session, *, user_id: str, connector_id: str) -> bool:
    """Whether the user has any connection to the connector, whatever its status."""
    found = session.exec(
        select(Connection.id)
        .where(Connection.user_id == user_id, Connection.connector_id == connector_id)
        .limit(1)
    ).first()
    return found is not None
