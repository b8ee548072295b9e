"""Queries of terms versions and policy changes, and of the connections a terms
change pauses and resumes (tables in :mod:`broker.store.policy_models`).

What counts as a change, and whether it pauses, is :mod:`broker.flows.terms`'s: these
functions only read and write the rows. The updates that pause, resume or answer a
paused connection are conditional on its status, so a concurrent change of status
wins and is not overwritten.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime
from typing import Any

from sqlalchemy import func
from sqlmodel import Session, col, select, update

from broker.core.gateway import TERMS_CHANGED
from broker.core.statuses import DISCLOSED_TRANSFER_STATUSES, ConnectionStatus
from broker.store.models import Connection, ConsentRecord, Transfer, TransferCategory
from broker.store.policy_models import PolicyChange, TermsVersion

__all__ = [
    "active_off_version",
    "claim_reconsent",
    "connections_by_id",
    "current_version",
    "latest_changes",
    "pause_for_terms",
    "policy_changes",
    "reconsents",
    "resume_paused",
    "sent_under_terms",
    "still_paused",
    "terms_versions",
]


def current_version(session: Session, *, connector_id: str) -> TermsVersion | None:
    """The connector's current terms version (the latest ``current_since``), if any."""
    return session.exec(
        select(TermsVersion)
        .where(TermsVersion.connector_id == connector_id)
        .order_by(col(TermsVersion.current_since).desc())
        .limit(1)
    ).first()


def terms_versions(session: Session, *, versions: Collection[str]) -> list[TermsVersion]:
    """The terms versions named ``versions`` (those that exist)."""
    return list(
        session.exec(select(TermsVersion).where(col(TermsVersion.version).in_(versions))).all()
    )


def policy_changes(session: Session, *, connector_id: str | None = None) -> list[PolicyChange]:
    """Every policy change (of ``connector_id`` only, if given), oldest first."""
    query = select(PolicyChange)
    if connector_id is not None:
        query = query.where(PolicyChange.connector_id == connector_id)
    return list(session.exec(query.order_by(col(PolicyChange.detected_at))).all())


def latest_changes(session: Session, *, limit: int) -> list[PolicyChange]:
    """The latest ``limit`` policy changes, newest first."""
    return list(
        session.exec(
            select(PolicyChange).order_by(col(PolicyChange.detected_at).desc()).limit(limit)
        ).all()
    )


def active_off_version(
    session: Session, *, connector_id: str, version: str
) -> list[tuple[str, str]]:
    """``(connection id, user id)`` of the connector's active connections whose consent
    is not on terms ``version`` (or names none), by connection id."""
    agreed = col(ConsentRecord.terms_version)
    rows = session.exec(
        select(Connection.id, Connection.user_id)
        .join(ConsentRecord, col(ConsentRecord.id) == col(Connection.consent_id))
        .where(
            Connection.connector_id == connector_id,
            Connection.status == ConnectionStatus.ACTIVE,
            agreed.is_(None) | (agreed != version),
        )
        .order_by(col(Connection.id))
    ).all()
    return [(cid, user_id) for cid, user_id in rows]


def pause_for_terms(session: Session, *, connection_ids: Collection[str], now: datetime) -> None:
    """The still active connections of ``connection_ids`` become ``reconsent_required``
    (``last_error``: terms changed)."""
    session.exec(
        update(Connection)
        .where(
            col(Connection.id).in_(connection_ids),
            col(Connection.status) == ConnectionStatus.ACTIVE,
        )
        .values(
            status=ConnectionStatus.RECONSENT_REQUIRED, last_error=TERMS_CHANGED, updated_at=now
        )
    )


def still_paused(session: Session, *, connection_ids: Collection[str]) -> list[str]:
    """The connections of ``connection_ids`` that are ``reconsent_required``."""
    return list(
        session.exec(
            select(Connection.id).where(
                col(Connection.id).in_(connection_ids),
                Connection.status == ConnectionStatus.RECONSENT_REQUIRED,
            )
        ).all()
    )


def resume_paused(session: Session, *, connection_ids: Collection[str], now: datetime) -> None:
    """The connections ``connection_ids`` become ``active`` again, their error cleared."""
    session.exec(
        update(Connection)
        .where(col(Connection.id).in_(connection_ids))
        .values(status=ConnectionStatus.ACTIVE, last_error=None, updated_at=now)
    )


def claim_reconsent(session: Session, *, connection_id: str, now: datetime) -> bool:
    """Take the one answer to a connection paused for terms: True to the caller whose
    conditional update found it still ``reconsent_required`` for a terms change."""
    claimed = session.exec(
        update(Connection)
        .where(
            col(Connection.id) == connection_id,
            col(Connection.status) == ConnectionStatus.RECONSENT_REQUIRED,
            col(Connection.last_error) == TERMS_CHANGED,
        )
        .values(updated_at=now)
    )
    return bool(claimed.rowcount == 1)


def connections_by_id(session: Session, *, ids: Collection[str]) -> dict[str, Connection]:
    """The connections of ``ids`` that exist, by id."""
    rows = session.exec(select(Connection).where(col(Connection.id).in_(ids))).all()
    return {c.id: c for c in rows}


def reconsents(
    session: Session, *, connection_ids: Collection[str], terms_version: str
) -> list[ConsentRecord]:
    """The consent records of ``connection_ids`` given under ``terms_version``, oldest
    consent first."""
    return list(
        session.exec(
            select(ConsentRecord)
            .where(
                col(ConsentRecord.connection_id).in_(connection_ids),
                ConsentRecord.terms_version == terms_version,
            )
            .order_by(col(ConsentRecord.consented_at))
        ).all()
    )


def sent_under_terms(session: Session) -> list[tuple[Any, ...]]:
    """Per recipient, terms version and category of the disclosed transfers (delivered
    or outcome unknown): ``(connector_id, terms_version, category, count, first
    created_at, last created_at)``."""
    rows = session.exec(
        # sqlmodel's select is typed for up to four columns; this one has six
        select(  # type: ignore[call-overload]
            col(Transfer.connector_id),
            col(Transfer.terms_version),
            col(TransferCategory.category),
            func.count(),
            func.min(Transfer.created_at),
            func.max(Transfer.created_at),
        )
        .join(TransferCategory, col(TransferCategory.transfer_id) == col(Transfer.id))
        .where(col(Transfer.status).in_(DISCLOSED_TRANSFER_STATUSES))
        .group_by(Transfer.connector_id, Transfer.terms_version, TransferCategory.category)
    ).all()
    return [tuple(r) for r in rows]
