"""Access tokens for delivery: read, and refreshed one at a time per connection.

- **One refresh per connection.** A refresh holds the connection's in-process
  lock and, on PostgreSQL, the token row's ``FOR UPDATE`` lock, so concurrent
  transfers (in this process or another) wait for one refresh instead of racing.
- **A waiter takes any newer token.** A caller that waited for the lock uses
  whatever token is stored now if it differs from the one that failed it and has
  not expired, even when that token is already inside the refresh margin
  (short-lived tokens would otherwise make every waiter refresh again).
- **The margin fits the token.** A token counts as due for refresh
  ``BROKER_TOKEN_REFRESH_SKEW`` seconds before it expires, but never earlier
  than half its lifetime (a 3 s token is used for 1.5 s, not refreshed forever).
- **A refresh is never abandoned half-way.** It runs in its own thread with its
  own timeout (``BROKER_TOKEN_REFRESH_TIMEOUT``); a caller that stops waiting
  does not stop it, so the rotated refresh token the provider hands back is
  always committed before anything else happens to the connection.
"""

from __future__ import annotations

import threading
from datetime import datetime, timedelta

from broker.core.errors import BrokerError, ConnectionNotActive, InvariantBroken, ProviderError
from broker.core.oauth import refresh_tokens
from broker.core.statuses import ConnectionStatus
from broker.flows.connection_setup import provider_oauth
from broker.flows.oauth_clients import connection_credentials
from broker.flows.webhooks import wake_sender
from broker.runtime import Runtime
from broker.store.audit import append_event
from broker.store.db import session_scope
from broker.store.models import Connection, ConnectionToken
from broker.store.tokens import TOKEN_COLUMNS, StoredToken, stored_token, token_for_update
from broker.store.webhook_outbox import enqueue_event

__all__ = ["TOKEN_COLUMNS", "StoredToken", "access_token", "refresh_access_token", "refresh_margin"]


def _open(rt: Runtime, row: ConnectionToken | StoredToken, kind: str) -> str:
    sealed = row.access_token if kind == "access_token" else row.refresh_token
    if sealed is None:
        raise ConnectionNotActive(f"the connection has no {kind.replace('_', ' ')}")
    return rt.vault.open(sealed, connection_id=row.connection_id, kind=kind)


def refresh_margin(rt: Runtime, row: ConnectionToken | StoredToken) -> timedelta:
    """How long before expiry the token counts as due: the skew, at most half its life."""
    margin = timedelta(seconds=rt.settings.token_refresh_skew)
    if row.expires_at is not None and row.updated_at is not None:
        lifetime = row.expires_at - row.updated_at
        if lifetime > timedelta(0):
            margin = min(margin, lifetime / 2)
    return margin


def _fresh(rt: Runtime, row: ConnectionToken | StoredToken) -> bool:
    if row.expires_at is None:
        return True
    return row.expires_at > rt.clock() + refresh_margin(rt, row)


def _expired(row: ConnectionToken, now: datetime) -> bool:
    return row.expires_at is not None and row.expires_at <= now


def access_token(rt: Runtime, connection_id: str, *, stored: StoredToken | None = None) -> str:
    """A usable access token, refreshing first if it is due. (On every delivery: one
    read on a plain connection, no ORM session; none when the caller has just read the
    row, as a delivery's claim does: ``stored``.)"""
    row = stored
    if row is None:
        with rt.engine.connect() as db:
            row = stored_token(db, connection_id=connection_id)
        if row is None:
            raise ConnectionNotActive("the connection has no tokens")
    token = _open(rt, row, "access_token")
    if _fresh(rt, row):
        return token
    return refresh_access_token(rt, connection_id, stale=token)


# Refusals after which this grant can never be refreshed. ``invalid_grant`` (and
# ``unauthorized_client``) end the user's grant: they must connect again. The others
# refuse the request or the client itself: the connection is in ``error`` (the host
# must fix its OAuth client, then reconnect). A 5xx, 408 or 429 may pass: retried.
_RECONSENT = ("invalid_grant", "unauthorized_client")
_ERROR = ("invalid_client", "invalid_request", "invalid_scope", "unsupported_grant_type")


def _failed_for_good(provider_error: object) -> bool:
    error = str(provider_error or "")
    return error in _ERROR or (error.startswith("http_4") and error not in ("http_408", "http_429"))


def _mark(rt: Runtime, connection_id: str, reason: str, *, status: str) -> None:
    """An active connection that can no longer refresh becomes ``status``
    (``reconsent_required`` or ``error``); the host is told in this transaction
    (webhook ``connection.<status>``)."""
    with session_scope(rt.engine) as session:
        conn = session.get(Connection, connection_id)
        if conn is not None and conn.status == ConnectionStatus.ACTIVE:
            conn.status = status
            conn.last_error = reason[:500]
            conn.updated_at = rt.clock()
            session.add(conn)
            enqueue_event(
                session.connection(),
                f"connection.{status}",
                at=conn.updated_at,
                ids={
                    "connection_id": conn.id,
                    "user_id": conn.user_id,
                    "connector_id": conn.connector_id,
                },
                status=status,
            )
    wake_sender(rt)


def _mark_reconsent(rt: Runtime, connection_id: str, reason: str) -> None:
    _mark(rt, connection_id, reason, status=ConnectionStatus.RECONSENT_REQUIRED)


def refresh_access_token(rt: Runtime, connection_id: str, *, stale: str | None) -> str:
    """Refresh unless another caller already replaced ``stale``; returns the new token.

    The work runs in a thread of its own, whose request to the provider may take up
    to ``BROKER_TOKEN_REFRESH_TIMEOUT``; this call waits for it at most
    ``BROKER_HTTP_TIMEOUT`` (a delivery's patience) and then gives up, while the
    refresh still finishes and commits the rotated refresh token."""
    box: dict[str, object] = {}

    def work() -> None:
        try:
            box["token"] = _refresh(rt, connection_id, stale=stale)
        except BaseException as exc:  # handed to the waiting caller
            box["error"] = exc

    thread = threading.Thread(target=work, name=f"refresh-{connection_id}", daemon=True)
    thread.start()
    thread.join(min(rt.settings.http_timeout, rt.settings.token_refresh_timeout) + 0.5)
    if thread.is_alive():
        raise ProviderError(
            "token refresh is taking too long; it will still complete",
            details={"connection_id": connection_id},
        )
    error = box.get("error")
    if isinstance(error, BaseException):
        raise error
    token = box.get("token")
    if not isinstance(token, str):
        raise InvariantBroken(
            "the token refresh ended without a token or an error",
            details={"connection_id": connection_id},
        )
    return token


def _refresh(rt: Runtime, connection_id: str, *, stale: str | None) -> str:
    with rt.connection_lock(connection_id), session_scope(rt.engine) as session:
        row = token_for_update(session, connection_id=connection_id)
        if row is None:
            raise ConnectionNotActive("the connection has no tokens")
        current = _open(rt, row, "access_token")
        if current != stale and not _expired(row, rt.clock()):
            return current  # someone refreshed while we waited: any newer token will do
        conn = session.get(Connection, connection_id)
        if conn is None or conn.status != ConnectionStatus.ACTIVE:
            raise ConnectionNotActive("the connection is no longer active")
        connector = rt.registry.get(conn.connector_id)
        if row.refresh_token is None:
            reason = "the access token expired and the provider issued no refresh token"
            session.rollback()
            _mark_reconsent(rt, connection_id, reason)
            raise ProviderError(reason + "; the user must connect again")
        old_refresh = _open(rt, row, "refresh_token")
        try:
            creds = connection_credentials(rt, connector, conn.tenant)
            tokens = refresh_tokens(
                rt.http,
                provider_oauth(connector, conn.settings, creds),
                creds,
                refresh_token=old_refresh,
                timeout=rt.settings.token_refresh_timeout,
            )
        except ProviderError as exc:
            rt.metrics.refreshes.labels("failed").inc()
            provider_error = exc.details.get("provider_error")
            if provider_error in _RECONSENT:
                session.rollback()
                _mark_reconsent(rt, connection_id, exc.message)
            elif _failed_for_good(provider_error):
                session.rollback()
                _mark(rt, connection_id, exc.message, status=ConnectionStatus.ERROR)
            raise
        except BrokerError:
            raise
        rt.metrics.refreshes.labels("rotated" if tokens.refresh_token else "refreshed").inc()
        now = rt.clock()
        rotated = tokens.refresh_token is not None and tokens.refresh_token != old_refresh
        row.access_token = rt.vault.seal(
            tokens.access_token, connection_id=connection_id, kind="access_token"
        )
        if tokens.refresh_token:
            row.refresh_token = rt.vault.seal(
                tokens.refresh_token, connection_id=connection_id, kind="refresh_token"
            )
        row.key_id = rt.vault.ring.active
        row.expires_at = tokens.expires_at
        row.scope = tokens.scope or row.scope
        row.updated_at = now
        session.add(row)
        append_event(
            session,
            head_file=rt.settings.audit_head_file,
            time=now,
            event="token.refreshed",
            actor="broker",
            user_id=conn.user_id,
            connector_id=conn.connector_id,
            connection_id=connection_id,
            details={"rotated": rotated},
        )
        return tokens.access_token
