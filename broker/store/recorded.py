"""Reads of consent records as reports name recipients from them: records by id, and
each connector's latest (:mod:`broker.flows.recorded` turns them into the terms a
consent was given under). Consent records are immutable: nothing here writes.
"""

from __future__ import annotations

from collections.abc import Collection

from sqlalchemy import bindparam, func, select
from sqlmodel import Session, col

from broker.store.models import ConsentRecord

__all__ = ["consent_records", "latest_consent", "latest_consents"]


def consent_records(session: Session, *, ids: Collection[str]) -> list[ConsentRecord]:
    """The consent records of ``ids`` that exist (one read; ``ids`` in the order given)."""
    stmt = select(ConsentRecord).where(col(ConsentRecord.id).in_(ids))
    rows = session.exec(stmt).all()  # type: ignore[call-overload]  # a Core select: rows
    return [c for (c,) in rows]


def latest_consents(session: Session) -> list[ConsentRecord]:
    """Each connector's latest consent record (the latest ``recorded_at``; every one
    recorded at that moment), by id."""
    latest = (
        select(col(ConsentRecord.connector_id), func.max(ConsentRecord.recorded_at).label("at"))
        .group_by(col(ConsentRecord.connector_id))
        .subquery()
    )
    rows = session.exec(  # type: ignore[call-overload]  # a Core select: rows
        select(ConsentRecord)
        .join(
            latest,
            (col(ConsentRecord.connector_id) == latest.c.connector_id)
            & (col(ConsentRecord.recorded_at) == latest.c.at),
        )
        .order_by(col(ConsentRecord.id))
    ).all()
    return [c for (c,) in rows]


_LATEST = (  # built once: the statement is compiled once, then only run
    select(ConsentRecord)
    .where(col(ConsentRecord.connector_id) == bindparam("connector_id"))
    .order_by(col(ConsentRecord.recorded_at).desc(), col(ConsentRecord.id).desc())
    .limit(1)
)


def latest_consent(session: Session, *, connector_id: str) -> ConsentRecord | None:
    """The connector's latest consent record: one index lookup (connector_id,
    recorded_at; migration 0016); of records made at the same moment, the one with the
    largest id."""
    params = {"connector_id": connector_id}
    found = session.exec(_LATEST, params=params).first()  # type: ignore[call-overload]
    return found[0] if found is not None else None
