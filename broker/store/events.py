"""Reads of the audit log's entries as auditors and reports ask for them: a page of
entries newest first, the event names, a transfer's entries, legal disclosures and
objections. Appending is :mod:`broker.store.audit`'s (and the audit writer's).

A user is named in an entry by id (format 1) or by pseudonym (format 2):
``user_id`` arguments match both (:func:`broker.store.subjects.names_user`).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any, TypedDict, Unpack

from sqlmodel import Session, col, select

from broker.store.models import AuditRow
from broker.store.subjects import names_user

__all__ = [
    "BLOCKED_EVENT",
    "LEGAL_DISCLOSURE_EVENT",
    "OBJECTION_EVENTS",
    "EntryConditions",
    "blocked_details",
    "entry_page",
    "event_names",
    "legal_disclosures",
    "objections",
    "transfer_entries",
    "where_matching",
]

BLOCKED_EVENT = "transfer.blocked"
LEGAL_DISCLOSURE_EVENT = "disclosure.legal"
OBJECTION_EVENTS = ("preference.objected", "preference.withdrawn")


class EntryConditions(TypedDict, total=False):
    """What :func:`where_matching` narrows entries by (each one given and not None)."""

    event: str | None
    user_id: str | None
    connector_id: str | None
    transfer_id: str | None
    since: str | None
    until: str | None


def where_matching(
    stmt: Any,
    *,
    event: str | None = None,
    user_id: str | None = None,
    connector_id: str | None = None,
    transfer_id: str | None = None,
    since: str | None = None,
    until: str | None = None,
) -> Any:
    """``stmt`` (a select from the log) narrowed to the entries matching every condition
    given: ``event`` a name, or a group when it ends in ``.`` (every name starting so);
    ``since`` (inclusive) and ``until`` (exclusive) entry times as the log writes them
    (fixed-width UTC text, :func:`broker.core.audit_chain.format_time`: compared as text)."""
    if event and event.endswith("."):
        stmt = stmt.where(col(AuditRow.event).startswith(event, autoescape=True))
    elif event:
        stmt = stmt.where(AuditRow.event == event)
    if user_id:
        stmt = stmt.where(names_user(AuditRow.user_id, user_id))  # or pseudonym
    if connector_id:
        stmt = stmt.where(AuditRow.connector_id == connector_id)
    if transfer_id:
        stmt = stmt.where(AuditRow.transfer_id == transfer_id)
    if since:
        stmt = stmt.where(col(AuditRow.time) >= since)
    if until:
        stmt = stmt.where(col(AuditRow.time) < until)
    return stmt


def entry_page(
    session: Session,
    *,
    before_seq: int | None,
    limit: int,
    **conditions: Unpack[EntryConditions],
) -> list[AuditRow]:
    """Up to ``limit + 1`` entries matching :func:`where_matching`'s ``conditions``,
    newest first, each with a seq below ``before_seq``; a row beyond ``limit`` says there
    is a next page."""
    stmt = where_matching(select(AuditRow), **conditions)
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
