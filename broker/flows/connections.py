"""Reading connections and their consent records."""

from __future__ import annotations

from typing import Any

from sqlmodel import col, select

from broker.core.errors import NotFound
from broker.runtime import Runtime
from broker.store.db import session_scope
from broker.store.models import Connection, ConsentRecord

__all__ = ["connection_dict", "consent_dict", "get_connection", "list_connections", "list_consents"]


def connection_dict(conn: Connection, consent: ConsentRecord | None) -> dict[str, Any]:
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
        "granted_categories": list(consent.granted_categories) if consent else [],
        "declined_categories": list(consent.declined_categories) if consent else [],
    }


def consent_dict(rec: ConsentRecord) -> dict[str, Any]:
    data = rec.model_dump()
    data["connector"] = data.pop("connector_id")
    return data


def get_connection(rt: Runtime, connection_id: str) -> tuple[Connection, ConsentRecord | None]:
    with session_scope(rt.engine) as session:
        conn = session.get(Connection, connection_id)
        if conn is None:
            raise NotFound(
                f"no connection {connection_id!r}", details={"connection_id": connection_id}
            )
        consent = session.get(ConsentRecord, conn.consent_id) if conn.consent_id else None
    return conn, consent


def list_connections(rt: Runtime, user_id: str) -> list[tuple[Connection, ConsentRecord | None]]:
    with session_scope(rt.engine) as session:
        conns = session.exec(
            select(Connection)
            .where(Connection.user_id == user_id)
            .order_by(col(Connection.created_at).desc(), col(Connection.id))
        ).all()
        ids = [c.consent_id for c in conns if c.consent_id]
        consents = (
            {
                r.id: r
                for r in session.exec(
                    select(ConsentRecord).where(col(ConsentRecord.id).in_(ids))
                ).all()
            }
            if ids
            else {}
        )
    return [(c, consents.get(c.consent_id or "")) for c in conns]


def list_consents(rt: Runtime, connection_id: str) -> list[ConsentRecord]:
    get_connection(rt, connection_id)
    with session_scope(rt.engine) as session:
        return list(
            session.exec(
                select(ConsentRecord)
                .where(ConsentRecord.connection_id == connection_id)
                .order_by(col(ConsentRecord.recorded_at))
            ).all()
        )
