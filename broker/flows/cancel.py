"""Cancelling transfers that no worker holds: one by the caller's request, or every
queued one of a connection when it is revoked (in the revocation's transaction).

A cancel is a conditional update (still pending, no lease): a transfer a worker has
claimed is already being sent, finds its connection inactive when its run starts, or
is already final; it is never cancelled under a worker. A cancel writes
``transfer.cancelled`` and counts the outcome in the recipient summary, in the same
transaction.
"""

from __future__ import annotations

from sqlmodel import Session

from broker.core.errors import NotCancellable, NotFound
from broker.core.statuses import TransferStatus
from broker.flows.share import event_fields
from broker.runtime import Runtime
from broker.store.audit import append_event
from broker.store.db import session_scope
from broker.store.models import Transfer
from broker.store.summaries import add_outcomes, outcome_of
from broker.store.transfer_rows import cancel_unstarted, get_transfer, unstarted_ids

__all__ = ["cancel_in", "cancel_queued", "cancel_transfer", "find_transfer"]


def find_transfer(rt: Runtime, transfer_id: str) -> Transfer:
    with Session(rt.engine) as session:
        t = get_transfer(session, transfer_id=transfer_id)
    if t is None:
        raise NotFound(f"no transfer {transfer_id!r}", details={"transfer_id": transfer_id})
    return t


def cancel_transfer(rt: Runtime, transfer_id: str, *, actor: str) -> Transfer:
    """Cancel a transfer no worker holds (queued, or waiting for a rescheduled retry)."""
    t = find_transfer(rt, transfer_id)
    if t.status != TransferStatus.PENDING or t.lease_owner is not None:
        raise NotCancellable(
            "only a transfer that has not started can be cancelled",
            details={"transfer_id": t.id, "status": t.status},
        )
    stored, won = _cancel(rt, t, actor=actor, reason="cancelled by the caller")
    if not won:
        raise NotCancellable(
            "the transfer started or ended before it could be cancelled",
            details={"transfer_id": t.id, "status": stored.status},
        )
    return stored


def cancel_in(
    session: Session, rt: Runtime, transfer_id: str, *, actor: str, reason: str
) -> tuple[Transfer, bool]:
    now = rt.clock()
    won = cancel_unstarted(session, transfer_id=transfer_id, now=now, reason=reason)
    stored = get_transfer(session, transfer_id=transfer_id, fresh=True)
    if stored is None:  # erased meanwhile (the user's data was deleted)
        raise NotFound(f"no transfer {transfer_id!r}", details={"transfer_id": transfer_id})
    if won:
        rt.metrics.deliveries.labels(stored.connector_id, "cancelled").inc()
        append_event(
            session,
            head_file=rt.settings.audit_head_file,
            time=now,
            event="transfer.cancelled",
            actor=actor,
            outcome=TransferStatus.CANCELLED,
            details={"reason": reason},
            **event_fields(stored),
        )
        add_outcomes(session.connection(), [outcome_of(stored)])  # in this transaction
    return stored, won


def _cancel(rt: Runtime, t: Transfer, *, actor: str, reason: str) -> tuple[Transfer, bool]:
    with session_scope(rt.engine) as session:
        stored, won = cancel_in(session, rt, t.id, actor=actor, reason=reason)
    if won:
        rt.signal_outcome(t.id)
    return stored, won


def cancel_queued(
    session: Session, rt: Runtime, connection_id: str, *, actor: str, reason: str
) -> list[str]:
    """In the caller's transaction (a revocation's): cancel every transfer of the
    connection that no worker holds; returns their ids. A held one finds the
    connection inactive when its run starts, or is already sending."""
    queued = unstarted_ids(session, connection_id=connection_id)
    return [tid for tid in queued if cancel_in(session, rt, tid, actor=actor, reason=reason)[1]]
