"""Host confirmation of a new connection (``confirm: true`` on the connect session).

The strongest defence against a connection linked from someone else's browser:
after the callback the connection is ``pending_confirmation`` (tokens stored,
consent recorded, nothing shared: transfers need ``active``) until the host's
backend, from its own logged-in session after the return redirect, calls
``POST /v1/connections/{id}/confirm``. A connection not confirmed within
``BROKER_CONFIRM_TTL`` seconds is revoked (at the provider too) when someone
tries to confirm it or when ``expire_unconfirmed`` runs; the host may also
revoke it at any time with ``DELETE /v1/connections/{id}``.
"""

from __future__ import annotations

from broker.core.errors import Conflict, InvariantBroken
from broker.core.statuses import ConnectionStatus
from broker.flows.connections import require_connection
from broker.flows.revoke import revoke_connection
from broker.runtime import Runtime
from broker.store.audit import append_event
from broker.store.confirmations import activate_pending, overdue_pending
from broker.store.db import session_scope
from broker.store.models import Connection

__all__ = ["EXPIRED_ACTOR", "PENDING", "confirm_connection", "expire_unconfirmed"]

PENDING = ConnectionStatus.PENDING_CONFIRMATION
EXPIRED_ACTOR = "broker:confirmation_expired"


def confirm_connection(rt: Runtime, connection_id: str, *, actor: str) -> Connection:
    """Make a ``pending_confirmation`` connection ``active``; ``Conflict`` otherwise."""
    now = rt.clock()
    with session_scope(rt.engine) as session:
        conn = require_connection(session, connection_id)
        if conn.status != PENDING:
            raise Conflict(
                f"connection {connection_id!r} is not waiting for confirmation "
                f"(its status is {conn.status})",
                details={"connection_id": connection_id, "status": conn.status},
            )
        expired = conn.confirm_by is not None and conn.confirm_by <= now
        if not expired:
            if not activate_pending(session, connection_id=connection_id, at=now):
                # a concurrent confirm or revoke won
                raise Conflict(
                    f"connection {connection_id!r} is no longer waiting for confirmation",
                    details={"connection_id": connection_id},
                )
            append_event(
                session,
                head_file=rt.settings.audit_head_file,
                time=now,
                event="connection.confirmed",
                actor=actor,
                user_id=conn.user_id,
                connector_id=conn.connector_id,
                connection_id=conn.id,
                consent_id=conn.consent_id,
                legal_basis="consent",
                outcome=ConnectionStatus.ACTIVE,
            )
    if expired:
        revoke_connection(rt, connection_id, actor=EXPIRED_ACTOR)
        raise Conflict(
            f"connection {connection_id!r} was not confirmed in time; it has been revoked",
            details={"connection_id": connection_id, "reason": "confirmation_expired"},
        )
    with session_scope(rt.engine) as session:
        confirmed = session.get(Connection, connection_id)
    if confirmed is None:
        raise InvariantBroken(
            "the connection just confirmed is gone", details={"connection_id": connection_id}
        )
    return confirmed


def expire_unconfirmed(rt: Runtime) -> list[str]:
    """Revoke every ``pending_confirmation`` connection past its deadline; their ids."""
    with session_scope(rt.engine) as session:
        ids = overdue_pending(session, now=rt.clock())
    for connection_id in ids:
        revoke_connection(rt, connection_id, actor=EXPIRED_ACTOR)
    return ids
