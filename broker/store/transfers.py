"""Reads of the transfers table: pages in keyset order, counts, the rows a report or
a reconciliation needs. Decisions about them (what a filter may say, what a page
shows, what becomes of an interrupted transfer) stay in the flows.

:func:`transfer_page` is the statement the page-order indexes serve (migrations 0007,
0014, 0020; ``bench/transfer_filters.py``): ``… WHERE <filter> AND (created_at, id)
before the cursor ORDER BY created_at DESC, id DESC LIMIT n + 1``.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime
from typing import Any, TypedDict, Unpack

from sqlalchemy import func, or_
from sqlmodel import Session, col, select, update

from broker.core.statuses import DISCLOSED_TRANSFER_STATUSES, TransferStatus
from broker.store.models import Transfer, TransferCategory

__all__ = [
    "TransferConditions",
    "activity_counts",
    "count_matching",
    "disclosed_declarations",
    "disclosed_to_user",
    "lapsed_pending",
    "mark_pre_engine",
    "matching_query",
    "page_keys",
    "status_counts",
    "transfer_page",
    "unleased_pending",
    "where_matching",
]


class TransferConditions(TypedDict, total=False):
    """What :func:`where_matching` narrows transfers by (each one given and not None)."""

    connection_id: str | None
    user_id: str | None
    connector_id: str | None
    status: str | None
    since: datetime | None
    until: datetime | None
    category: str | None


def where_matching(
    stmt: Any,
    *,
    connection_id: str | None = None,
    user_id: str | None = None,
    connector_id: str | None = None,
    status: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    category: str | None = None,
) -> Any:
    """``stmt`` (a select from transfers) narrowed to the transfers matching every
    condition given (``since`` inclusive, ``until`` exclusive, by ``created_at``); a
    category joins the category index, read in page order by its index (0014)."""
    if connection_id:
        stmt = stmt.where(Transfer.connection_id == connection_id)
    if user_id:
        stmt = stmt.where(Transfer.user_id == user_id)
    if connector_id:
        stmt = stmt.where(Transfer.connector_id == connector_id)
    if status:
        stmt = stmt.where(Transfer.status == status)
    if since:
        stmt = stmt.where(col(Transfer.created_at) >= since)
    if until:
        stmt = stmt.where(col(Transfer.created_at) < until)
    if category:
        stmt = stmt.join(
            TransferCategory,
            (col(TransferCategory.transfer_id) == col(Transfer.id))
            & (col(TransferCategory.category) == category),
        )
    return stmt


def matching_query(**conditions: Unpack[TransferConditions]) -> Any:
    """``select(Transfer)`` narrowed by :func:`where_matching`'s ``conditions``, for
    :func:`transfer_page`."""
    return where_matching(select(Transfer), **conditions)


def page_keys(*, category: str | None = None) -> tuple[Any, Any]:
    """The ``(created_at, id)`` columns a page of matching transfers is ordered by: the
    category index's copy of them when a category is asked for, so its index gives the
    page order."""
    if category:
        return (TransferCategory.created_at, TransferCategory.transfer_id)
    return (Transfer.created_at, Transfer.id)


def transfer_page(
    session: Session,
    stmt: Any,
    *,
    after: tuple[datetime, str] | None,
    limit: int,
    keys: tuple[Any, Any] = (Transfer.created_at, Transfer.id),
) -> list[Transfer]:
    """Up to ``limit + 1`` rows of ``stmt`` (a select of Transfer), newest first by
    ``keys`` (the ``(created_at, id)`` columns to order by), strictly before ``after``;
    a row beyond ``limit`` says there is a next page."""
    created_col, id_col = col(keys[0]), col(keys[1])
    if after:
        created, tid = after
        stmt = stmt.where(or_(created_col < created, (created_col == created) & (id_col < tid)))
    stmt = stmt.order_by(created_col.desc(), id_col.desc()).limit(limit + 1)
    return list(session.exec(stmt).all())


def count_matching(session: Session, **conditions: Unpack[TransferConditions]) -> int:
    """How many transfers match :func:`where_matching`'s ``conditions``."""
    stmt = where_matching(select(func.count()).select_from(Transfer), **conditions)
    return int(session.exec(stmt).one())


def status_counts(session: Session) -> dict[str, int]:
    """Every transfer status present, with how many transfers have it."""
    rows = session.exec(select(Transfer.status, func.count()).group_by(Transfer.status)).all()
    return dict(rows)


def activity_counts(
    session: Session, *, connection_ids: Collection[str]
) -> list[tuple[str, str, int, datetime]]:
    """Per connection in ``connection_ids`` and status: how many transfers, and when
    the latest was created."""
    rows = session.exec(
        select(
            Transfer.connection_id,
            Transfer.status,
            func.count(),
            func.max(Transfer.created_at),
        )
        .where(col(Transfer.connection_id).in_(connection_ids))
        .group_by(Transfer.connection_id, Transfer.status)
    ).all()
    return [tuple(r) for r in rows]  # type: ignore[misc]


def disclosed_to_user(session: Session, *, user_id: str) -> list[Transfer]:
    """``user_id``'s transfers that count as disclosures (delivered, outcome unknown),
    oldest first."""
    return list(
        session.exec(
            select(Transfer)
            .where(
                Transfer.user_id == user_id,
                col(Transfer.status).in_(DISCLOSED_TRANSFER_STATUSES),
            )
            .order_by(col(Transfer.created_at))
        ).all()
    )


def disclosed_declarations(
    session: Session, *, connector_ids: Collection[str]
) -> list[tuple[str, str | None, list[str] | None, list[str]]]:
    """``(connector_id, purpose, data_uses, categories)`` of every disclosed transfer
    to the connectors ``connector_ids``, as each transfer recorded them."""
    rows = session.exec(
        select(
            Transfer.connector_id, Transfer.purpose, Transfer.data_uses, Transfer.categories
        ).where(
            col(Transfer.connector_id).in_(connector_ids),
            col(Transfer.status).in_(DISCLOSED_TRANSFER_STATUSES),
        )
    ).all()
    return [tuple(r) for r in rows]  # type: ignore[misc]


def lapsed_pending(session: Session, *, now: datetime) -> list[Transfer]:
    """Pending transfers whose lease ran out before ``now``, oldest first."""
    return list(
        session.exec(
            select(Transfer)
            .where(
                Transfer.status == TransferStatus.PENDING,
                col(Transfer.lease_owner).is_not(None),
                col(Transfer.lease_until) < now,
            )
            .order_by(col(Transfer.created_at))
        ).all()
    )


def unleased_pending(session: Session, *, created_before: datetime) -> list[Transfer]:
    """Pending transfers never leased nor scheduled (written before the delivery
    engine) created at or before ``created_before``, oldest first."""
    return list(
        session.exec(
            select(Transfer)
            .where(
                Transfer.status == TransferStatus.PENDING,
                col(Transfer.lease_owner).is_(None),
                col(Transfer.next_attempt_at).is_(None),
                col(Transfer.created_at) <= created_before,
            )
            .order_by(col(Transfer.created_at))
        ).all()
    )


def mark_pre_engine(session: Session, *, transfer_ids: Collection[str], until: datetime) -> None:
    """Give the still unleased pending transfers of ``transfer_ids`` the lease
    ``pre-engine`` until ``until`` (so that a lapsed-lease claim takes them)."""
    session.exec(
        update(Transfer)
        .where(
            col(Transfer.id).in_(transfer_ids),
            col(Transfer.status) == TransferStatus.PENDING,
            col(Transfer.lease_owner).is_(None),
        )
        .values(lease_owner="pre-engine", lease_until=until)
    )
