"""Approve: record the user's choice, open an OAuth attempt (PKCE + state), go to the provider.

Approving records the user's choice (:func:`broker.flows.consent_records.consent_terms`)
and a ``pending`` connection; nothing usable exists until the callback
(:mod:`broker.flows.callback`) has exchanged the code. When the user already has a live
connection of the connector (same settings), approving re-authorises that one instead
(the attempt is a *reconnect*: same id, new tokens and consent record at the callback),
unless the session was created with ``reconnect: false``.

Approving also binds the attempt to the approving browser (RFC 9700 §4.7): a random
nonce goes into that browser's cookie and only its digest onto the attempt, so an
authorize URL handed to someone else cannot link their third-party account to this
platform account. Each attempt uses the connector's own redirect URI (RFC 9700 §4.4.2,
mix-up) unless its manifest or the operator keeps it on the shared one
(:func:`broker.flows.oauth_clients.redirect_uri_for`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlmodel import Session

from broker.core.oauth import Pkce, authorization_url, new_state
from broker.core.tokens import digest, new_secret
from broker.flows.connect import check_connector, session_ticket
from broker.flows.connection_setup import provider_oauth, settings_in_token
from broker.flows.consent_records import consent_terms, granted_categories
from broker.flows.oauth_clients import connection_credentials, redirect_uri_for
from broker.runtime import Runtime
from broker.store.connections import live_connection
from broker.store.db import session_scope
from broker.store.models import Connection, ConnectSession, OAuthAttempt
from broker.store.tickets import drop_lapsed_verifiers

__all__ = ["Approval", "approve"]


@dataclass(frozen=True)
class Approval:
    """The approved attempt: where to send the browser, and the nonce its cookie keeps.

    Only the nonce's SHA-256 is stored; the callback refuses an answer that does not
    come back with it."""

    authorize_url: str
    browser_nonce: str

    def __repr__(self) -> str:
        return "Approval(authorize_url=<redacted>, browser_nonce=<redacted>)"


def approve(
    rt: Runtime,
    *,
    token: str | None,
    connector_id: str,
    optional_granted: Iterable[str],
    client_ip: str | None,
    user_agent: str | None,
) -> Approval:
    """Record the user's choice; return the provider's authorize URL and the nonce the
    approving browser must keep in its cookie (only its digest is stored)."""
    connector = rt.registry.get(connector_id)
    manifest = connector.manifest
    with session_scope(rt.engine) as session:  # the session first, before reading its settings
        live = session_ticket(session, token, kind="connect", now=rt.clock(), claim=False)
        check_connector(live, connector_id)
    granted = granted_categories(rt, manifest, live.user_id, optional_granted)
    creds = connection_credentials(rt, connector, live.tenant)
    settings = manifest.validate_settings(settings_in_token(token))
    oauth = provider_oauth(connector, settings, creds)
    now = rt.clock()
    pkce, state, nonce = Pkce.generate(), new_state(), new_secret(nbytes=32)
    redirect_uri = redirect_uri_for(rt, connector)
    consent = consent_terms(
        rt,
        connector,
        granted=granted,
        now=now,
        client_ip=client_ip,
        user_agent=user_agent,
        settings=settings,
        return_url=live.return_url,
        confirm=live.confirm,
    )
    with session_scope(rt.engine) as session:
        # spent here: of two concurrent approvals one wins (broker.store.tickets)
        row = session_ticket(session, token, kind="connect", now=now, claim=True)
        check_connector(row, connector_id)  # refused: rolled back, the link unspent
        _spend_lapsed_attempts(session, now)
        connection_id, reconnect = _connection_to_authorise(
            session, row, connector_id=connector_id, settings=settings, now=now
        )
        if reconnect:  # re-authorise it: same id, new tokens and consent
            consent = consent.as_reconnect()
        attempt = OAuthAttempt(
            id="att_" + new_secret(nbytes=9),
            state_hash=digest(state),
            connection_id=connection_id,
            session_id=row.id,
            code_verifier=rt.vault.seal(
                pkce.verifier, connection_id=connection_id, kind="pkce_verifier"
            ),
            redirect_uri=redirect_uri,
            browser_hash=digest(nonce),
            consent=consent.to_dict(),  # what the callback records (broker.core.consent)
            created_at=now,
            expires_at=now + timedelta(seconds=rt.settings.oauth_state_ttl),
        )
        session.add(attempt)
    extra = connector.authorize_params()
    url = authorization_url(
        oauth,
        client_id=creds.client_id,
        redirect_uri=redirect_uri,
        state=state,
        pkce=pkce,
        extra=extra,
    )
    return Approval(authorize_url=url, browser_nonce=nonce)


def _spend_lapsed_attempts(session: Session, now: datetime) -> None:
    """Attempts nobody answered in time are spent too: their verifiers go."""
    drop_lapsed_verifiers(session, now=now)


def _connection_to_authorise(
    session: Session,
    row: ConnectSession,
    *,
    connector_id: str,
    settings: Mapping[str, str],
    now: datetime,
) -> tuple[str, bool]:
    """The id of the connection the attempt authorises, and whether it re-authorises
    the user's live one (a *reconnect*); otherwise a new ``pending`` connection."""
    existing = (
        live_connection(session, user_id=row.user_id, connector_id=connector_id, settings=settings)
        if row.reconnect
        else None
    )
    if existing is not None and existing.tenant == row.tenant:  # another tenant: its own
        return existing.id, True
    connection_id = "conn_" + new_secret(nbytes=12)
    session.add(
        Connection(
            id=connection_id,
            user_id=row.user_id,
            connector_id=connector_id,
            status="pending",
            created_at=now,
            updated_at=now,
            settings=dict(settings) or None,
            tenant=row.tenant,
        )
    )
    session.flush()
    return connection_id, False
