"""The OAuth callback: the provider's answer to an approved consent.

``state`` is single-use (claimed atomically) and expires; claiming it also
deletes the attempt's sealed PKCE verifier from the row (it is kept in memory
for the one code exchange). Before anything else the answer must

* arrive at the redirect URI the attempt used (one per connector: a response
  for one connector's attempt at another connector's callback is a mix-up,
  RFC 9700 §4.4),
* come back to the browser that approved it (the nonce in its cookie matches
  the attempt's digest: RFC 9700 §4.7, login CSRF),
* carry the right ``iss`` when the provider sends one or says it always does
  (RFC 9207).

Nothing is half-stored: on any error or refusal the connection stays
``pending`` with the reason in ``last_error`` (never an exception's text: a setting
that cannot fill the manifest's issuer is recorded by its code,
:mod:`broker.core.failures`) and the attempt is spent; on
success the tokens, the consent record, the ``consent.granted`` event and the
``active`` (or, when the host asked to confirm, ``pending_confirmation``)
status are written in one transaction
(:func:`broker.flows.consent_records.record_consent`).

A *reconnect* (the connect session re-authorised the user's live connection,
issue 12) completes that connection instead of a new one: its tokens are replaced
and a new consent record is written on the same id; on a refusal it keeps its
tokens, consent and status.
"""

from __future__ import annotations

import hmac
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta

from broker.core.consent import Consent
from broker.core.errors import BrokerError, InvalidSetting, NotFound, ProviderError, StateInvalid
from broker.core.failures import setting_failure
from broker.core.oauth import exchange_code, issuer_problem
from broker.core.placeholders import render_url
from broker.core.statuses import LIVE_CONNECTION_STATUSES, ConnectionStatus
from broker.core.tickets import TicketRefusal
from broker.core.tokens import digest
from broker.flows.connect import safe_return
from broker.flows.connection_setup import check_new_connection, provider_oauth
from broker.flows.consent_records import record_consent
from broker.flows.oauth_clients import connection_credentials
from broker.runtime import Runtime
from broker.store.connections import get_connection
from broker.store.db import session_scope
from broker.store.models import ConnectionToken, OAuthAttempt
from broker.store.tickets import claim_ticket, drop_verifier

__all__ = ["CallbackOutcome", "complete_callback"]

log = logging.getLogger("broker.connectors")

_PROVIDER_ERROR = re.compile(r"^[a-z_]{1,64}$")
_STATE_REFUSED = {
    TicketRefusal.UNKNOWN: "the provider's answer has an unknown state; it was ignored",
    TicketRefusal.USED: "this authorization answer was already used; it was ignored",
    TicketRefusal.EXPIRED: "this authorization attempt has expired; please connect again",
}

NOT_THIS_BROWSER = (
    "This sign-in did not come back to the browser that started it, so nothing was "
    "connected. If you were connecting an integration, start again from the platform."
)
MIX_UP = (
    "The answer came from a different provider than the one this connection was started "
    "with, so nothing was connected. Start again from the platform."
)


@dataclass(frozen=True)
class CallbackOutcome:
    ok: bool
    connection_id: str | None
    connector_name: str | None
    message: str
    return_url: str | None
    #: the browser nonce this answer used (the page removes it from the cookie)
    browser_nonce: str | None = None
    status: str | None = None


def _open_statuses(consent: Consent) -> tuple[str, ...]:
    """The statuses in which the attempt's connection may still be completed: a new one
    while ``pending``; one a reconnect re-authorises while it is live."""
    return LIVE_CONNECTION_STATUSES if consent.reconnect else (ConnectionStatus.PENDING,)


def _claim_attempt(rt: Runtime, state: str | None) -> OAuthAttempt:
    if not state:
        raise StateInvalid("the provider's answer has no state; the connection was not made")
    with session_scope(rt.engine) as session:
        attempt = claim_ticket(session, OAuthAttempt, digest=digest(state), now=rt.clock())
        if attempt is TicketRefusal.EXPIRED:  # spent by time: its verifier goes
            drop_verifier(session, digest=digest(state))
            session.commit()
        if isinstance(attempt, TicketRefusal):
            raise StateInvalid(_STATE_REFUSED[attempt])
        # Spent from here on, whatever follows: the sealed verifier leaves the row now,
        # in the claim's transaction (this process keeps it in ``attempt`` for the one
        # exchange).
        drop_verifier(session, attempt_id=attempt.id)
    return attempt


def _fail(
    rt: Runtime,
    attempt: OAuthAttempt,
    reason: str,
    public: str,
    *,
    redirect: bool = True,
    nonce: str | None = None,
) -> CallbackOutcome:
    """Refuse: the connection stays ``pending`` with ``last_error``; nothing is stored.

    ``redirect=False`` (the answer reached the wrong callback or the wrong browser)
    shows the page instead of sending this browser to the host's return URL."""
    with session_scope(rt.engine) as session:
        conn = get_connection(session, connection_id=attempt.connection_id)
        if conn is not None and conn.status == ConnectionStatus.PENDING:
            conn.last_error = reason[:500]
            conn.updated_at = rt.clock()
            session.add(conn)
    consent = Consent.from_dict(attempt.consent)
    back = (
        safe_return(
            rt,
            consent.return_url,
            {"status": "error", "connection_id": attempt.connection_id},
        )
        if redirect
        else None
    )
    return CallbackOutcome(
        ok=False,
        connection_id=attempt.connection_id,
        connector_name=consent.connector_name,
        message=public,
        return_url=back,
        browser_nonce=nonce,
        status="error",
    )


def _matching_nonce(attempt: OAuthAttempt, nonces: Iterable[str]) -> str | None:
    """The browser's nonce whose digest the attempt keeps, if the browser has it."""
    if attempt.browser_hash is None:  # an attempt approved before browsers were bound
        return None
    found = None
    for nonce in nonces:
        if hmac.compare_digest(digest(nonce), attempt.browser_hash):
            found = nonce
    return found


def _issuer_refusal(rt: Runtime, attempt: OAuthAttempt, iss: str | None) -> str | None:
    """Why the answer's ``iss`` is refused (RFC 9207), or ``None``."""
    with session_scope(rt.engine) as session:
        conn = get_connection(session, connection_id=attempt.connection_id)
    if conn is None:
        return None  # refused later: the attempt is no longer open
    try:
        connector = rt.registry.get(conn.connector_id)
    except NotFound:
        return None  # refused later, with the usual message
    oauth = connector.manifest.oauth
    if iss is None and not oauth.authorization_response_iss_parameter_supported:
        return None
    values = {**(conn.settings or {}), "client_id": ""}
    try:
        expected = render_url(oauth.issuer, values) if oauth.issuer is not None else None
        authorize_url = render_url(oauth.authorize_url, values)
    except InvalidSetting as exc:  # names the setting, never its value
        reason = setting_failure(log, exc, where=f"issuer of connection {conn.id!r}")
        return f"the manifest's issuer cannot be filled in for this connection: {reason}"
    return issuer_problem(
        iss,
        expected=expected,
        required=oauth.authorization_response_iss_parameter_supported,
        authorize_url=authorize_url,
    )


def complete_callback(
    rt: Runtime,
    *,
    state: str | None,
    code: str | None,
    error: str | None,
    error_description: str | None = None,
    redirect_uri: str,
    browser_nonces: Iterable[str] = (),
    iss: str | None = None,
) -> CallbackOutcome:
    """Finish the attempt ``state`` names.

    ``redirect_uri`` is the callback URL the answer arrived at (without its query),
    ``browser_nonces`` the nonces the browser's cookie holds, ``iss`` the answer's
    issuer parameter, if any."""
    attempt = _claim_attempt(rt, state)
    nonce = _matching_nonce(attempt, browser_nonces)
    if attempt.redirect_uri != redirect_uri:
        return _fail(
            rt,
            attempt,
            f"refused: the answer arrived at {redirect_uri}, not at the attempt's redirect URI "
            f"{attempt.redirect_uri} (possible mix-up)",
            MIX_UP,
            redirect=False,
            nonce=nonce,
        )
    if nonce is None:
        return _fail(
            rt,
            attempt,
            "refused: the answer came back to a browser without this attempt's cookie "
            "(possible login CSRF)",
            NOT_THIS_BROWSER,
            redirect=False,
        )
    if refused := _issuer_refusal(rt, attempt, iss):
        return _fail(rt, attempt, f"refused: {refused}", MIX_UP, redirect=False, nonce=nonce)
    if error:
        code_name = error if _PROVIDER_ERROR.match(error) else "invalid_error"
        if code_name == "access_denied":
            public = "You did not allow access at the provider, so nothing was connected."
        else:
            public = f"The provider refused the connection ({code_name}); nothing was connected."
        return _fail(rt, attempt, f"provider returned error={code_name}", public, nonce=nonce)
    if not code:
        return _fail(
            rt,
            attempt,
            "provider answered without a code",
            "The provider sent no authorization code.",
            nonce=nonce,
        )
    consent = Consent.from_dict(attempt.consent)
    with session_scope(rt.engine) as session:
        conn = get_connection(session, connection_id=attempt.connection_id)
    if conn is None or conn.status not in _open_statuses(consent):
        raise StateInvalid("this connection attempt is no longer open")
    try:
        connector = rt.registry.get(conn.connector_id)
        if attempt.code_verifier is None:
            raise StateInvalid("this authorization attempt has no PKCE verifier left")
        verifier = rt.vault.open(attempt.code_verifier, connection_id=conn.id, kind="pkce_verifier")
        creds = connection_credentials(rt, connector, conn.tenant)
        oauth = provider_oauth(connector, conn.settings, creds)
        tokens = exchange_code(
            rt.http,
            oauth,
            creds,
            code=code,
            redirect_uri=attempt.redirect_uri,
            pkce_verifier=verifier,
        )
    except ProviderError as exc:
        return _fail(
            rt,
            attempt,
            exc.message,
            f"The provider could not complete the connection: {exc.message}.",
            nonce=nonce,
        )
    except BrokerError as exc:
        return _fail(
            rt, attempt, exc.message, "The connection could not be completed.", nonce=nonce
        )
    refused = check_new_connection(rt, connector, conn.settings or {}, tokens, oauth, creds)
    if refused is not None:
        return _fail(
            rt,
            attempt,
            f"connection check failed: {refused}",
            f"{connector.manifest.name} is reachable, but the connection check failed: "
            f"{refused}. Nothing was connected.",
            nonce=nonce,
        )
    now = rt.clock()
    confirm = consent.confirm
    status = ConnectionStatus.PENDING_CONFIRMATION if confirm else ConnectionStatus.ACTIVE
    with session_scope(rt.engine) as session:
        conn = get_connection(session, connection_id=attempt.connection_id)
        if conn is None or conn.status not in _open_statuses(consent):
            raise StateInvalid("this connection attempt is no longer open")
        session.merge(  # a reconnect replaces the connection's tokens
            ConnectionToken(
                connection_id=conn.id,
                key_id=rt.vault.ring.active,
                access_token=rt.vault.seal(
                    tokens.access_token, connection_id=conn.id, kind="access_token"
                ),
                refresh_token=rt.vault.seal(
                    tokens.refresh_token, connection_id=conn.id, kind="refresh_token"
                )
                if tokens.refresh_token
                else None,
                expires_at=tokens.expires_at,
                scope=tokens.scope,
                updated_at=now,
            )
        )
        if confirm:
            conn.confirm_by = now + timedelta(seconds=rt.settings.confirm_ttl)
        renewed = "reconnect" if consent.reconnect else None
        record_consent(rt, session, conn, consent, status=status, now=now, renewed=renewed)
    name = consent.connector_name
    message = f"{name} is connected."
    if confirm:
        message = (
            f"{name} is connected and waits for the platform to confirm it; "
            "nothing is shared until then."
        )
    returned = "pending_confirmation" if confirm else "connected"
    return CallbackOutcome(
        ok=True,
        connection_id=conn.id,
        connector_name=name,
        message=message,
        return_url=safe_return(
            rt, consent.return_url, {"status": returned, "connection_id": conn.id}
        ),
        browser_nonce=nonce,
        status=status,
    )
