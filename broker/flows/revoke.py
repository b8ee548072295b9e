"""Revoke: tokens revoked at the provider (RFC 7009), destroyed here, consent withdrawn.

Local destruction never depends on the provider: if its revocation endpoint
fails, the ciphertexts are still deleted, the connection is still
``revoked``, and the failure is recorded in the event and reported.
"""

from __future__ import annotations

from typing import Any

from sqlmodel import Session

from broker.core.errors import BrokerError, NotFound
from broker.core.revocation import revoke_grant
from broker.flows.connect import client_credentials
from broker.flows.connection_setup import provider_oauth
from broker.flows.connector_calls import call_connection_hook
from broker.runtime import Runtime
from broker.store.audit import append_event
from broker.store.db import session_scope
from broker.store.models import Connection, ConnectionToken

__all__ = ["revoke_connection"]


def _open(rt: Runtime, conn: Connection, row: ConnectionToken, kind: str) -> str | None:
    sealed = row.refresh_token if kind == "refresh_token" else row.access_token
    if sealed is None:
        return None
    try:
        return rt.vault.open(sealed, connection_id=conn.id, kind=kind)
    except BrokerError:
        return None


def _revoke_at_provider(rt: Runtime, conn: Connection, row: ConnectionToken) -> dict[str, str]:
    try:
        connector = rt.registry.get(conn.connector_id)
    except NotFound:
        return {"provider": "connector no longer installed; tokens destroyed locally only"}
    settings = conn.settings or {}
    access = _open(rt, conn, row, "access_token")
    results: dict[str, str] = {}
    if access is not None:
        failed = call_connection_hook(rt, connector, "before_revoke", settings, token=access)
        if failed is not None:
            results["before_revoke"] = f"failed: {failed}"
    if not connector.manifest.oauth.revoke_url:
        return {**results, "provider": "the provider has no revocation endpoint"}
    try:
        creds = client_credentials(connector)
        oauth = provider_oauth(connector, settings, creds)
    except (BrokerError, KeyError, ValueError) as exc:
        reason = exc.message if isinstance(exc, BrokerError) else f"bad setting {exc}"
        return {**results, "provider": f"not attempted: {reason}"}
    refresh = _open(rt, conn, row, "refresh_token")
    results.update(revoke_grant(rt.http, oauth, creds, access_token=access, refresh_token=refresh))
    return results


def revoke_connection(rt: Runtime, connection_id: str, *, actor: str) -> dict[str, Any]:
    """Returns ``{"connection": Connection, "provider_revocation": {...}, "already": bool}``."""
    with Session(rt.engine) as session:
        conn = session.get(Connection, connection_id)
        row = session.get(ConnectionToken, connection_id)
    if conn is None:
        raise NotFound(f"no connection {connection_id!r}", details={"connection_id": connection_id})
    if conn.status == "revoked":
        return {"connection": conn, "provider_revocation": {}, "already": True}
    provider = _revoke_at_provider(rt, conn, row) if row is not None else {}
    failed = any(v.startswith("failed") for v in provider.values())
    now = rt.clock()
    with session_scope(rt.engine) as session:
        conn = session.get(Connection, connection_id)
        assert conn is not None
        token_row = session.get(ConnectionToken, connection_id)
        if token_row is not None:
            session.delete(token_row)
        previous = conn.status
        conn.status = "revoked"
        conn.revoked_at = now
        conn.updated_at = now
        if failed:
            conn.last_error = "provider revocation failed; local tokens destroyed"
        session.add(conn)
        fields = {
            "user_id": conn.user_id,
            "connector_id": conn.connector_id,
            "connection_id": conn.id,
            "consent_id": conn.consent_id,
        }
        if conn.consent_id:
            append_event(
                session,
                head_file=rt.settings.audit_head_file,
                time=now,
                event="consent.withdrawn",
                actor=actor,
                legal_basis="consent",
                **fields,
            )
        append_event(
            session,
            head_file=rt.settings.audit_head_file,
            time=now,
            event="connection.revoked",
            actor=actor,
            outcome="provider_revocation_failed" if failed else "revoked",
            details={"previous_status": previous, "provider_revocation": provider},
            **fields,
        )
    return {"connection": conn, "provider_revocation": provider, "already": False}
