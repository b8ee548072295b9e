"""Queries of the host's webhook endpoints (``webhook_endpoints``) and their delivery
log as the API lists it. Writing deliveries is :mod:`broker.store.webhook_outbox`,
sending them :mod:`broker.store.webhook_jobs`; what may change on an endpoint is
decided in :mod:`broker.flows.webhook_endpoints`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import or_
from sqlmodel import Session, col, select

from broker.store.webhook_models import WebhookDelivery, WebhookEndpoint

__all__ = [
    "all_endpoints_for_update",
    "delete_deliveries",
    "deliveries_page",
    "endpoints_page",
]

_DELIVERIES = WebhookDelivery.__table__  # type: ignore[attr-defined]


def _newest_first(
    session: Session, model: Any, stmt: Any, before: tuple[datetime, str] | None, limit: int
) -> list[Any]:
    created_col, id_col = col(model.created_at), col(model.id)
    if before is not None:
        created, row_id = before
        stmt = stmt.where(or_(created_col < created, (created_col == created) & (id_col < row_id)))
    stmt = stmt.order_by(created_col.desc(), id_col.desc()).limit(limit)
    return list(session.exec(stmt).all())


def endpoints_page(
    session: Session, *, before: tuple[datetime, str] | None, limit: int
) -> list[WebhookEndpoint]:
    """Up to ``limit`` endpoints, newest first (``created_at``, then ``id``), those
    after the ``(created_at, id)`` of ``before`` when given."""
    return _newest_first(session, WebhookEndpoint, select(WebhookEndpoint), before, limit)


def deliveries_page(
    session: Session,
    *,
    endpoint_id: str,
    status: str | None,
    before: tuple[datetime, str] | None,
    limit: int,
) -> list[WebhookDelivery]:
    """Up to ``limit`` of the endpoint's deliveries (of ``status`` when given), newest
    first, those after the ``(created_at, id)`` of ``before`` when given."""
    stmt = select(WebhookDelivery).where(col(WebhookDelivery.endpoint_id) == endpoint_id)
    if status is not None:
        stmt = stmt.where(col(WebhookDelivery.status) == status)
    return _newest_first(session, WebhookDelivery, stmt, before, limit)


def delete_deliveries(session: Session, *, endpoint_id: str) -> None:
    """Delete the endpoint's delivery log, whatever the state of each delivery."""
    # a Core delete: no ORM synchronisation of the session's objects
    session.execute(_DELIVERIES.delete().where(_DELIVERIES.c.endpoint_id == endpoint_id))


def all_endpoints_for_update(session: Session) -> list[WebhookEndpoint]:
    """Every endpoint, locked for update (``FOR UPDATE`` where the database has it)."""
    return list(session.exec(select(WebhookEndpoint).with_for_update()).all())
