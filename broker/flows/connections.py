"""Reading connections and their consent records.

:func:`require_connection` is the one place a connection asked for by id and not found
becomes :class:`~broker.core.errors.NotFound` (404); the queries are
``broker.store.connections``'s.
"""

from __future__ import annotations

from typing import Any

from sqlmodel import Session

from broker.core.errors import NotFound
from broker.flows.receipts import recorded_consent
from broker.runtime import Runtime
from broker.store import connections as store
from broker.store.db import session_scope
from broker.store.models import Connection, ConsentRecord

__all__ = [
    "connection_dict",
    "consent_dict",
    "get_connection",
    "list_connections",
    "list_consents",
    "require_connection",
]


def connection_dict(conn: Connection, consent: ConsentRecord | None) -> dict[str, Any]:
    granted = recorded_consent(consent) if consent else None
    return {
        "id": conn.id,
        "user_id": conn.user_id,
        "connector": conn.connector_id,
        "status": conn.status,
        "created_at": conn.created_at,
        "activated_at": conn.activated_at,
        "revoked_at": conn.revoked_at,
        "last_error": conn.last_error,
        "consent_id": conn.consent_id,
        "tenant": conn.tenant,
        "granted_categories": list(granted.granted) if granted else [],
        "declined_categories": list(granted.declined) if granted else [],
    }


def consent_dict(rec: ConsentRecord) -> dict[str, Any]:
    """The consent record as the API shows it: its columns, ``connector_id`` also named
    by its old name ``connector``."""
    data = recorded_consent(rec).record_fields()
    data["connector"] = data.pop("connector_id")
    return data


def require_connection(session: Session, connection_id: str) -> Connection:
    """The connection ``connection_id``; :class:`NotFound` when there is none."""
    conn = store.get_connection(session, connection_id=connection_id)
    if conn is None:
        raise NotFound(f"no connection {connection_id!r}", details={"connection_id": connection_id})
    return conn


def get_connection(rt: Runtime, connection_id: str) -> tuple[Connection, ConsentRecord | None]:
    with session_scope(rt.engine) as session:
        conn = require_connection(session, connection_id)
        consent = store.consent_of(session, connection=conn)
    return conn, consent


def list_connections(rt: Runtime, user_id: str) -> list[tuple[Connection, ConsentRecord | None]]:
    with session_scope(rt.engine) as session:
        conns = store.user_connections(session, user_id=user_id)
        consents = store.consent_records(session, ids=[c.consent_id for c in conns if c.consent_id])
    return [(c, consents.get(c.consent_id or "")) for c in conns]


def list_consents(rt: Runtime, connection_id: str) -> list[ConsentRecord]:
    with session_scope(rt.engine) as session:
        require_connection(session, connection_id)
        return store.connection_consents(session, connection_id=connection_id)
