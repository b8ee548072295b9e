"""Reads of the audit log's entries as auditors and reports ask for them: a page of
entries newest first, the event names, a transfer's entries, legal disclosures and
objections. Appending is :mod:`broker.store.audit`'s (and the audit writer's).

A user is named in an entry by id (format 1) or by pseudonym (format 2):
``user_id`` arguments match both (:func:`broker.store.subjects.names_user`).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from sqlmodel import Session, col, select

from broker.store.models import AuditRow
from broker.store.subjects import names_user

__all__ = [
    "BLOCKED_EVENT",
    "LEGAL_DISCLOSURE_EVENT",
    "OBJECTION_EVENTS",
    "blocked_details",
    "entry_page",
    "event_names",
    "legal_disclosures",
    "objections",
    "transfer_entries",
]

BLOCKED_EVENT = "transfer.blocked"
LEGAL_DISCLOSURE_EVENT = "disclosure.legal"
OBJECTION_EVENTS = ("preference.objected", "preference.withdrawn")


def entry_page(
    session: Session, filtered: Any, *, before_seq: int | None, limit: int
) -> list[AuditRow]:
    """Up to ``limit + 1`` entries of ``filtered`` (a select of AuditRow with a filter's
    conditions), newest first, each with a seq below ``before_seq``; a row beyond
    ``limit`` says there is a next page."""
    stmt = filtered
    if before_seq is not None:
        stmt = stmt.where(col(AuditRow.seq) < before_seq)
    stmt = stmt.order_by(col(AuditRow.seq).desc()).limit(limit + 1)
    return list(session.exec(stmt).all())


def event_names(session: Session) -> list[str]:
    """Every event name in the log, sorted (read from the event index)."""
    return sorted(session.exec(select(AuditRow.event).distinct()).all())


def transfer_entries(session: Session, *, transfer_id: str) -> list[AuditRow]:
    """The entries about ``transfer_id``, in log order."""
    return list(
        session.exec(
            select(AuditRow).where(AuditRow.transfer_id == transfer_id).order_by(col(AuditRow.seq))
        ).all()
    )


def blocked_details(
    session: Session, *, transfer_ids: Collection[str]
) -> list[tuple[str, Mapping[str, Any]]]:
    """``(transfer_id, details)`` of the ``transfer.blocked`` entries of
    ``transfer_ids`` (one indexed read)."""
    rows = session.exec(
        select(AuditRow.transfer_id, AuditRow.details).where(
            col(AuditRow.transfer_id).in_(transfer_ids), AuditRow.event == BLOCKED_EVENT
        )
    ).all()
    return [(str(transfer_id), details) for transfer_id, details in rows]


def legal_disclosures(session: Session, *, user_id: str | None = None) -> list[AuditRow]:
    """The ``disclosure.legal`` entries (of ``user_id`` only, if given), in log order."""
    stmt = select(AuditRow).where(AuditRow.event == LEGAL_DISCLOSURE_EVENT)
    if user_id is not None:
        stmt = stmt.where(names_user(AuditRow.user_id, user_id))  # clear or pseudonym
    return list(session.exec(stmt.order_by(col(AuditRow.seq))).all())


def objections(session: Session, *, user_id: str) -> list[AuditRow]:
    """``user_id``'s objections to uses of their data and the withdrawals of them, in
    log order."""
    return list(
        session.exec(
            select(AuditRow)
            .where(
                names_user(AuditRow.user_id, user_id),  # clear (format 1) or pseudonym
                col(AuditRow.event).in_(OBJECTION_EVENTS),
            )
            .order_by(col(AuditRow.seq))
        ).all()
    )
