"""Queries of ``connector_credentials``: tenants' OAuth clients, one row per
(connector, tenant). What may be registered or deleted is decided in
:mod:`broker.flows.tenant_credentials`."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import func, or_
from sqlmodel import Session, col, select

from broker.store.credential_models import ConnectorCredential
from broker.store.models import Connection

__all__ = [
    "all_credentials_for_update",
    "count_connections_using",
    "credentials_page",
    "find_credentials",
]


def find_credentials(
    session: Session, *, connector_id: str, tenant: str
) -> ConnectorCredential | None:
    """The tenant's credentials for the connector, if registered."""
    return session.exec(
        select(ConnectorCredential).where(
            ConnectorCredential.connector_id == connector_id,
            ConnectorCredential.tenant == tenant,
        )
    ).first()


def credentials_page(
    session: Session, *, connector_id: str, before: tuple[datetime, str] | None, limit: int
) -> list[ConnectorCredential]:
    """Up to ``limit`` of the connector's credentials, newest first (``created_at``,
    then ``id``), those after the ``(created_at, id)`` of ``before`` when given."""
    created, row_id = col(ConnectorCredential.created_at), col(ConnectorCredential.id)
    stmt = select(ConnectorCredential).where(ConnectorCredential.connector_id == connector_id)
    if before is not None:
        at, last = before
        stmt = stmt.where(or_(created < at, (created == at) & (row_id < last)))
    stmt = stmt.order_by(created.desc(), row_id.desc()).limit(limit)
    return list(session.exec(stmt).all())


def count_connections_using(
    session: Session, *, connector_id: str, tenant: str, statuses: Iterable[str]
) -> int:
    """How many of the connector's connections of ``tenant`` have one of ``statuses``."""
    return session.exec(
        select(func.count())
        .select_from(Connection)
        .where(
            Connection.connector_id == connector_id,
            Connection.tenant == tenant,
            col(Connection.status).in_(list(statuses)),
        )
    ).one()


def all_credentials_for_update(session: Session) -> list[ConnectorCredential]:
    """Every row, locked for update (``FOR UPDATE`` where the database has it)."""
    return list(session.exec(select(ConnectorCredential).with_for_update()).all())
