"""Queries of the log's verification runs (``AuditVerification`` rows).

The flow that carries the runs out is :mod:`broker.flows.integrity`; these are the
statements it needs, each inside the caller's session and transaction.
"""

from __future__ import annotations

from collections.abc import Collection

from sqlalchemy import delete, update
from sqlmodel import Session, col, select

from broker.store.verification_models import AuditVerification

__all__ = ["latest_run", "mark_interrupted", "prune_incremental", "record_progress"]


def latest_run(*, session: Session, status: str) -> AuditVerification | None:
    """The most recent run with ``status``, or ``None``."""
    stmt = (
        select(AuditVerification)
        .where(AuditVerification.status == status)
        .order_by(col(AuditVerification.id).desc())
        .limit(1)
    )
    return session.exec(stmt).first()


def record_progress(*, session: Session, run_id: int, done: int, total: int) -> None:
    """How far run ``run_id`` has got: ``done`` of ``total`` entries."""
    session.exec(
        update(AuditVerification)
        .where(col(AuditVerification.id) == run_id)
        .values(done=done, total=total)
    )


def prune_incremental(*, session: Session, keep: int) -> None:
    """Forget all but the last ``keep`` completed incremental runs."""
    ids = session.exec(
        select(AuditVerification.id)
        .where(AuditVerification.kind == "incremental", AuditVerification.status == "done")
        .order_by(col(AuditVerification.id).desc())
        .offset(keep)
        .limit(1)
    ).all()
    if ids:
        session.exec(
            delete(AuditVerification)
            .where(col(AuditVerification.kind) == "incremental")
            .where(col(AuditVerification.status) == "done")
            .where(col(AuditVerification.id) <= ids[0])
        )


def mark_interrupted(*, session: Session, alive: Collection[int]) -> None:
    """Mark ``interrupted`` every run still ``running`` but not among ``alive`` (the
    runs of this process): a process that died left them behind."""
    session.exec(
        update(AuditVerification)
        .where(col(AuditVerification.status) == "running")
        .where(col(AuditVerification.id).not_in(list(alive)))
        .values(status="interrupted")
    )
