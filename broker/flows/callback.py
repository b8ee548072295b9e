"""The OAuth callback: the provider's answer to an approved consent.

``state`` is single-use (claimed atomically) and expires. Nothing is
half-stored: on any error the connection stays ``pending`` with the reason in
``last_error``; on success the tokens, the consent record, the
``consent.granted`` event and the ``active`` status are written in one
transaction.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from sqlmodel import col, select, update

from broker.core.errors import BrokerError, ProviderError, StateInvalid
from broker.core.oauth import exchange_code
from broker.core.tokens import digest, new_secret
from broker.flows.connect import client_credentials, safe_return
from broker.flows.connection_setup import check_new_connection, provider_oauth
from broker.runtime import Runtime
from broker.store.audit import append_event
from broker.store.db import session_scope
from broker.store.models import Connection, ConnectionToken, ConsentRecord, OAuthAttempt

__all__ = ["CallbackOutcome", "complete_callback"]

_PROVIDER_ERROR = re.compile(r"^[a-z_]{1,64}$")


@dataclass(frozen=True)
class CallbackOutcome:
    ok: bool
    connection_id: str | None
    connector_name: str | None
    message: str
    return_url: str | None


def _claim_attempt(rt: Runtime, state: str | None) -> OAuthAttempt:
    if not state:
        raise StateInvalid("the provider's answer has no state; the connection was not made")
    now = rt.clock()
    with session_scope(rt.engine) as session:
        attempt = session.exec(
            select(OAuthAttempt).where(OAuthAttempt.state_hash == digest(state))
        ).first()
        if attempt is None:
            raise StateInvalid("the provider's answer has an unknown state; it was ignored")
        if attempt.used_at is not None:
            raise StateInvalid("this authorization answer was already used; it was ignored")
        if attempt.expires_at <= now:
            raise StateInvalid("this authorization attempt has expired; please connect again")
        result = session.exec(
            update(OAuthAttempt)
            .where(col(OAuthAttempt.id) == attempt.id, col(OAuthAttempt.used_at).is_(None))
            .values(used_at=now)
        )
        if result.rowcount != 1:
            raise StateInvalid("this authorization answer was already used; it was ignored")
    return attempt


def _fail(rt: Runtime, attempt: OAuthAttempt, reason: str, public: str) -> CallbackOutcome:
    with session_scope(rt.engine) as session:
        conn = session.get(Connection, attempt.connection_id)
        if conn is not None and conn.status == "pending":
            conn.last_error = reason[:500]
            conn.updated_at = rt.clock()
            session.add(conn)
    consent = attempt.consent
    return CallbackOutcome(
        ok=False,
        connection_id=attempt.connection_id,
        connector_name=consent.get("connector_name"),
        message=public,
        return_url=safe_return(
            rt,
            consent.get("return_url"),
            {"status": "error", "connection_id": attempt.connection_id},
        ),
    )


def complete_callback(
    rt: Runtime,
    *,
    state: str | None,
    code: str | None,
    error: str | None,
    error_description: str | None = None,
) -> CallbackOutcome:
    attempt = _claim_attempt(rt, state)
    if error:
        code_name = error if _PROVIDER_ERROR.match(error) else "invalid_error"
        if code_name == "access_denied":
            public = "You did not allow access at the provider, so nothing was connected."
        else:
            public = f"The provider refused the connection ({code_name}); nothing was connected."
        return _fail(rt, attempt, f"provider returned error={code_name}", public)
    if not code:
        return _fail(
            rt,
            attempt,
            "provider answered without a code",
            "The provider sent no authorization code.",
        )
    with session_scope(rt.engine) as session:
        conn = session.get(Connection, attempt.connection_id)
    if conn is None or conn.status != "pending":
        raise StateInvalid("this connection attempt is no longer open")
    try:
        connector = rt.registry.get(conn.connector_id)
        verifier = rt.vault.open(attempt.code_verifier, connection_id=conn.id, kind="pkce_verifier")
        creds = client_credentials(connector)
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
        )
    except BrokerError as exc:
        return _fail(rt, attempt, exc.message, "The connection could not be completed.")
    refused = check_new_connection(rt, connector, conn.settings or {}, tokens, oauth, creds)
    if refused is not None:
        return _fail(
            rt,
            attempt,
            f"connection check failed: {refused}",
            f"{connector.manifest.name} is reachable, but the connection check failed: "
            f"{refused}. Nothing was connected.",
        )
    consent = attempt.consent
    now = rt.clock()
    record = ConsentRecord(
        id="cons_" + new_secret(nbytes=12),
        connection_id=conn.id,
        user_id=conn.user_id,
        connector_id=conn.connector_id,
        connector_name=consent["connector_name"],
        granted_categories=consent["granted"],
        declined_categories=consent["declined"],
        purposes=consent["purposes"],
        privacy_policy_url=consent["privacy_policy_url"],
        terms_url=consent["terms_url"],
        manifest_digest=consent["manifest_digest"],
        platform_policy_version=consent["platform_policy_version"],
        scopes=consent["scopes"],
        client_ip=consent.get("client_ip"),
        user_agent=consent.get("user_agent"),
        consented_at=datetime.fromisoformat(consent["consented_at"]),
        recorded_at=now,
    )
    with session_scope(rt.engine) as session:
        conn = session.get(Connection, attempt.connection_id)
        if conn is None or conn.status != "pending":
            raise StateInvalid("this connection attempt is no longer open")
        session.add(record)
        session.add(
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
        conn.status = "active"
        conn.activated_at = now
        conn.updated_at = now
        conn.last_error = None
        conn.consent_id = record.id
        session.add(conn)
        append_event(
            session,
            head_file=rt.settings.audit_head_file,
            time=now,
            event="consent.granted",
            actor=f"user:{conn.user_id}",
            user_id=conn.user_id,
            connector_id=conn.connector_id,
            connection_id=conn.id,
            consent_id=record.id,
            categories=list(record.granted_categories),
            legal_basis="consent",
            outcome="active",
            details={
                "declined": list(record.declined_categories),
                "privacy_policy_url": record.privacy_policy_url,
                "terms_url": record.terms_url,
                "platform_policy_version": record.platform_policy_version,
                "manifest_digest": record.manifest_digest,
            },
        )
    return CallbackOutcome(
        ok=True,
        connection_id=conn.id,
        connector_name=consent["connector_name"],
        message=f"{consent['connector_name']} is connected.",
        return_url=safe_return(
            rt, consent.get("return_url"), {"status": "connected", "connection_id": conn.id}
        ),
    )
