"""Resolve transfers left ``pending`` by a crash between recording and completing.

Such a transfer may or may not have reached the third party, so it is never
marked delivered and never resent automatically: it becomes ``failed`` with
the reason "interrupted", and a ``transfer.failed`` event says so. The
caller can retry with a new idempotency key once it has checked.
"""

from __future__ import annotations

from datetime import timedelta

from sqlmodel import Session, col, select

from broker.runtime import Runtime
from broker.store.audit import append_event
from broker.store.db import session_scope
from broker.store.models import Transfer

__all__ = ["INTERRUPTED", "find_interrupted", "reconcile"]

INTERRUPTED = (
    "interrupted: the broker stopped between recording and completing this delivery; "
    "the third party may or may not have received it"
)


def find_interrupted(rt: Runtime, *, older_than: int | None = None) -> list[Transfer]:
    age = rt.settings.reconcile_after if older_than is None else older_than
    cutoff = rt.clock() - timedelta(seconds=age)
    with Session(rt.engine) as session:
        return list(
            session.exec(
                select(Transfer)
                .where(Transfer.status == "pending", col(Transfer.created_at) <= cutoff)
                .order_by(col(Transfer.created_at))
            ).all()
        )


def reconcile(rt: Runtime, *, older_than: int | None = None) -> list[Transfer]:
    """Mark interrupted transfers failed; returns the ones it resolved."""
    resolved = []
    for stale in find_interrupted(rt, older_than=older_than):
        with session_scope(rt.engine) as session:
            t = session.get(Transfer, stale.id, with_for_update=True)
            if t is None or t.status != "pending":
                continue
            now = rt.clock()
            t.status = "failed"
            t.reason = INTERRUPTED
            t.completed_at = now
            session.add(t)
            append_event(
                session,
                head_file=rt.settings.audit_head_file,
                time=now,
                event="transfer.failed",
                actor="broker:reconcile",
                user_id=t.user_id,
                connector_id=t.connector_id,
                connection_id=t.connection_id,
                transfer_id=t.id,
                consent_id=t.consent_id,
                categories=list(t.categories),
                field_paths=list(t.field_paths),
                purpose=t.purpose,
                legal_basis=t.legal_basis,
                payload_sha256=t.payload_sha256,
                payload_bytes=t.payload_bytes,
                destination=t.destination,
                outcome="failed",
                details={"reason": "interrupted", "pending_since": t.created_at.isoformat()},
            )
        resolved.append(t)
    return resolved
