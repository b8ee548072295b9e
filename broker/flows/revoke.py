"""Revoke: tokens revoked at the provider (RFC 7009), destroyed here, consent withdrawn.

Local destruction never depends on the provider: if its revocation endpoint
fails, the ciphertexts are still deleted, the connection is still
``revoked``, and the failure is recorded in the event and reported.

A revocation is **claimed once**. The first caller moves the connection to
``revoking`` with a conditional update (``… WHERE id = ? AND status = <what it
read>``): exactly one of any number of concurrent callers (threads, processes)
changes a row, and only that one calls the provider and writes
``consent.withdrawn`` and ``connection.revoked``; the others answer
``already``. The claim is committed before the provider is called, so from
that moment no transfer can use the tokens (transfers need ``active``).

A crash between the claim and the end leaves the connection ``revoking`` with
its sealed tokens, unusable but not yet revoked at the provider. The claim is a
lease: once older than :func:`claim_ttl` (longer than a provider revocation can
take), the next revocation of that connection takes it over and finishes the
job, and ``broker serve`` finishes such leftovers at start
(:func:`resume_interrupted_revocations`). The finishing transaction is itself
conditional on the claim (status and claim time), so a slow first winner and a
taker-over never both write the events.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from sqlmodel import Session

from broker.core.errors import BrokerError, InvalidSetting, NotFound
from broker.core.failures import setting_failure
from broker.core.revocation import revoke_grant
from broker.core.statuses import (
    ConnectionStatus,
    RevocationOutcome,
    TokenRevocation,
    revocation_failed,
)
from broker.flows.cancel import cancel_queued
from broker.flows.connection_setup import provider_oauth
from broker.flows.connections import require_connection
from broker.flows.connector_calls import call_connection_hook
from broker.flows.oauth_clients import connection_credentials
from broker.runtime import Runtime
from broker.store.audit import append_event
from broker.store.db import session_scope
from broker.store.models import Connection, ConnectionToken
from broker.store.revocations import claim_revocation, finish_revocation, stale_revocations

__all__ = [
    "REVOKING",
    "claim_ttl",
    "resume_interrupted_revocations",
    "revoke_connection",
]

log = logging.getLogger("broker.connectors")

REVOKING = ConnectionStatus.REVOKING
_DONE = ConnectionStatus.REVOKED
_FAILED_NOTE = "provider revocation failed; local tokens destroyed"
_CLAIM_ATTEMPTS = 3


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
            results["before_revoke"] = TokenRevocation.FAILED.because(failed)
    if not connector.manifest.oauth.revoke_url:
        return {**results, "provider": "the provider has no revocation endpoint"}
    try:
        creds = connection_credentials(rt, connector, conn.tenant)
        oauth = provider_oauth(connector, settings, creds)
    except BrokerError as exc:
        if isinstance(exc, InvalidSetting):
            reason = setting_failure(log, exc, where=f"revoking connection {conn.id}")
        else:
            reason = exc.message
        return {**results, "provider": TokenRevocation.NOT_ATTEMPTED.because(reason)}
    refresh = _open(rt, conn, row, "refresh_token")
    results.update(revoke_grant(rt.http, oauth, creds, access_token=access, refresh_token=refresh))
    return results


def claim_ttl(rt: Runtime) -> timedelta:
    """How long a claim protects a revocation in progress: the connector's
    ``before_revoke`` hook plus two provider calls, with room to spare."""
    s = rt.settings
    return timedelta(seconds=s.connector_timeout + 3 * s.http_timeout + 30)


def _claim(rt: Runtime, connection_id: str) -> tuple[Connection, str, datetime] | None:
    """Move the connection to ``revoking`` if nobody else holds it; returns
    (connection, status before, claim time) to the one caller that did, else None."""
    for _ in range(_CLAIM_ATTEMPTS):
        now = rt.clock()
        with session_scope(rt.engine) as session:
            conn = require_connection(session, connection_id)
            previous = conn.status
            if previous == _DONE:
                return None
            if previous == REVOKING and conn.updated_at > now - claim_ttl(rt):
                return None  # another caller is revoking it right now
            won = claim_revocation(
                session,
                connection_id=connection_id,
                status=previous,
                # a stale claim: take it over only if still stale
                updated_at=conn.updated_at if previous == REVOKING else None,
                now=now,
            )
            session.expunge(conn)
        if won:
            conn.status, conn.updated_at = REVOKING, now
            return conn, previous, now
        # the status changed under us (another claim, an activation): look again
    return None


def _finish(
    rt: Runtime,
    conn: Connection,
    *,
    previous: str,
    claimed_at: datetime,
    provider: dict[str, str],
    actor: str,
) -> Connection | None:
    """Destroy the tokens, mark the connection revoked and write the events, in one
    transaction, if the claim is still ours; else None (a taker-over finishes)."""
    failed = revocation_failed(provider)
    now = rt.clock()
    with session_scope(rt.engine) as session:
        finished = finish_revocation(
            session,
            connection_id=conn.id,
            claimed_at=claimed_at,
            now=now,
            last_error=_FAILED_NOTE if failed else None,
        )
        if not finished:
            return None
        token_row = session.get(ConnectionToken, conn.id)
        if token_row is not None:
            session.delete(token_row)
        # Everything else the winner must end with the connection belongs here, in
        # this transaction: its queued transfers are cancelled (nothing more is sent).
        cancelled = cancel_queued(
            session, rt, conn.id, actor=actor, reason="the connection was revoked"
        )
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
        details: dict[str, Any] = {"previous_status": previous, "provider_revocation": provider}
        if previous == REVOKING:
            details["resumed"] = True  # an interrupted revocation, finished now
        append_event(
            session,
            head_file=rt.settings.audit_head_file,
            time=now,
            event="connection.revoked",
            actor=actor,
            outcome=(
                RevocationOutcome.PROVIDER_REVOCATION_FAILED
                if failed
                else RevocationOutcome.REVOKED
            ),
            details=details,
            **fields,
        )
    for transfer_id in cancelled:
        rt.signal_outcome(transfer_id)
    conn.status, conn.revoked_at, conn.updated_at = _DONE, now, now
    if failed:
        conn.last_error = _FAILED_NOTE
    return conn


def revoke_connection(rt: Runtime, connection_id: str, *, actor: str) -> dict[str, Any]:
    """Returns ``{"connection": Connection, "provider_revocation": {...}, "already": bool}``;
    ``already`` for every caller but the one that claimed the revocation."""
    claimed = _claim(rt, connection_id)
    if claimed is None:
        with Session(rt.engine) as session:
            current = session.get(Connection, connection_id)
        return {"connection": current, "provider_revocation": {}, "already": True}
    conn, previous, claimed_at = claimed
    # No token refresh in this process while the tokens are being revoked.
    with rt.connection_lock(connection_id):
        with Session(rt.engine) as session:
            row = session.get(ConnectionToken, connection_id)
        provider = _revoke_at_provider(rt, conn, row) if row is not None else {}
    finished = _finish(
        rt, conn, previous=previous, claimed_at=claimed_at, provider=provider, actor=actor
    )
    if finished is None:
        with Session(rt.engine) as session:
            current = session.get(Connection, connection_id)
        return {"connection": current, "provider_revocation": provider, "already": True}
    return {"connection": finished, "provider_revocation": provider, "already": False}


def resume_interrupted_revocations(rt: Runtime) -> list[str]:
    """Finish revocations whose claim outlived :func:`claim_ttl` (the process that held it
    stopped); returns their connection ids."""
    stale = rt.clock() - claim_ttl(rt)
    with Session(rt.engine) as session:
        ids = stale_revocations(session, claimed_before=stale)
    done = []
    for connection_id in ids:
        if not revoke_connection(rt, connection_id, actor="broker:recovery")["already"]:
            done.append(connection_id)
    return done
