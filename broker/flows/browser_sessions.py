"""Who a browser is: a user (through a one-time link the host creates) or an auditor
(through an API key typed into the console's sign-in form), and the server-side
session that remembers it afterwards.

A session is a row of ``browser_sessions``: the browser's cookie holds 32 random
bytes (base64url), the row only their SHA-256, so a copy of the database opens no
session. Each row has an absolute expiry (``BROKER_USER_SESSION_TTL``,
``BROKER_CONSOLE_SESSION_TTL``; never extended) and ``ended_at``: signing out
sets it, and revoking an API key sets it on every console session opened with
that key (:func:`broker.flows.keys.revoke_api_key`), so both end the session at
once, on every broker process. A console session is also checked against its key
on every request. The per-session CSRF secret is derived from the cookie value
(``SHA-256("broker-csrf/v1|" + value)``), so it is never stored either.

Failed console sign-ins are ``console.login_failed`` audit events; sign-in
attempts are rate limited (:mod:`broker.flows.login_throttle`).
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from broker.core.errors import AuthenticationRequired, BrokerError, SessionInvalid
from broker.core.tickets import TicketRefusal
from broker.core.tokens import digest, new_secret
from broker.flows.connect import IssuedSession, create_connect_session
from broker.flows.keys import KEY_PREFIX, authenticate, require_role
from broker.flows.login_throttle import LoginThrottle
from broker.runtime import Runtime
from broker.store.api_keys import find_key
from broker.store.audit import append_event
from broker.store.browser_sessions import (
    delete_expired_sessions,
    end_session,
    find_browser_session,
)
from broker.store.db import session_scope
from broker.store.models import ApiKey, BrowserSessionRecord, ConnectSession
from broker.store.tickets import claim_ticket

__all__ = [
    "CONSOLE_ROLES",
    "KINDS",
    "BrowserSession",
    "console_key",
    "create_user_session",
    "end_browser_session",
    "open_browser_session",
    "read_browser_session",
    "redeem_user_session",
    "sign_in_with_key",
]

CONSOLE_ROLES = ("admin", "auditor")
KINDS = ("user", "auditor")
_CSRF_CONTEXT = b"broker-csrf/v1|"
_MAX_COOKIE = 200
_LINK_REFUSED = {
    TicketRefusal.UNKNOWN: "this link is not valid; open the page again from the platform",
    TicketRefusal.USED: "this link has already been used; open the page again",
    TicketRefusal.EXPIRED: "this link has expired; open the page again from the platform",
}


@dataclass(frozen=True)
class BrowserSession:
    """A live session: ``subject`` is the user id (``user``) or the key id (``auditor``)."""

    id: str
    kind: str
    subject: str
    csrf: str
    issued_at: datetime
    expires_at: datetime


def _csrf(value: str) -> str:
    raw = hashlib.sha256(_CSRF_CONTEXT + value.encode()).digest()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _ttl(rt: Runtime, kind: str) -> timedelta:
    s = rt.settings
    return timedelta(seconds=s.user_session_ttl if kind == "user" else s.console_session_ttl)


def open_browser_session(
    rt: Runtime, kind: str, subject: str, *, api_key_id: str | None = None
) -> tuple[str, BrowserSession]:
    """A new session; returns the cookie value (shown to the browser only) and the session."""
    if kind not in KINDS:
        raise ValueError(f"unknown session kind {kind!r}")
    value = new_secret(nbytes=32)
    now = rt.clock()
    row = BrowserSessionRecord(
        id="bs_" + new_secret(nbytes=9),
        token_hash=digest(value),
        kind=kind,
        subject=subject,
        api_key_id=api_key_id,
        created_at=now,
        expires_at=now + _ttl(rt, kind),
    )
    with session_scope(rt.engine) as session:
        # Expired sessions serve nothing: drop their rows as we go.
        delete_expired_sessions(session, now=now)
        session.add(row)
    return value, BrowserSession(row.id, kind, subject, _csrf(value), now, row.expires_at)


def read_browser_session(rt: Runtime, value: str | None, *, kind: str) -> BrowserSession | None:
    """The live session whose cookie value is ``value``, of this ``kind``; else None
    (unknown, signed out, ended by a key revocation, expired, or of the other kind)."""
    if not value or len(value) > _MAX_COOKIE:
        return None
    with session_scope(rt.engine) as session:
        row = find_browser_session(session, digest=digest(value))
    if row is None or row.kind != kind or row.ended_at is not None:
        return None
    if row.expires_at <= rt.clock():
        return None
    return BrowserSession(
        row.id, row.kind, row.subject, _csrf(value), row.created_at, row.expires_at
    )


def end_browser_session(rt: Runtime, value: str | None) -> bool:
    """Sign out: the session of ``value`` ends now, wherever its cookie is. Says whether
    a live session was ended."""
    if not value or len(value) > _MAX_COOKIE:
        return False
    with session_scope(rt.engine) as session:
        return end_session(session, digest=digest(value), at=rt.clock())


def create_user_session(rt: Runtime, *, user_id: str, created_by: str | None) -> IssuedSession:
    """A one-time link to the user's own page, ``BASE_URL/me?session=…``."""
    return create_connect_session(rt, user_id=user_id, created_by=created_by, kind="user")


def redeem_user_session(rt: Runtime, token: str | None) -> str:
    """Spend a user-session link; returns its user id. A link works once."""
    if not token:
        raise SessionInvalid("this link has no session; open the page again from the platform")
    with session_scope(rt.engine) as session:
        row = claim_ticket(
            session, ConnectSession, digest=digest(token), now=rt.clock(), match={"kind": "user"}
        )
    if isinstance(row, TicketRefusal):
        raise SessionInvalid(_LINK_REFUSED[row])
    return row.user_id


def _known_key(rt: Runtime, raw: str) -> ApiKey | None:
    """The key row ``raw`` belongs to, valid or not (to count and log by its id)."""
    if not raw:
        return None
    with session_scope(rt.engine) as session:
        return find_key(session, digest=digest(raw))


def _failure_reason(known: ApiKey | None, raw: str) -> str:
    if not raw:
        return "no_key"
    if known is None:
        return "unknown_key"
    if known.revoked_at is not None:
        return "revoked_key"
    return "role_not_allowed"


def _record_failed_login(
    rt: Runtime, *, raw: str, known: ApiKey | None, client: str | None
) -> None:
    details: dict[str, Any] = {
        "reason": _failure_reason(known, raw),
        "client_ip": client,
        # whether the text had the shape of a broker key; never any part of it
        "broker_key_format": raw.startswith(KEY_PREFIX),
    }
    if known is not None:
        details["key_id"] = known.id
    with session_scope(rt.engine) as session:
        append_event(
            session,
            head_file=rt.settings.audit_head_file,
            time=rt.clock(),
            event="console.login_failed",
            actor=f"client:{client}" if client else "client:unknown",
            outcome="refused",
            details=details,
        )


def sign_in_with_key(
    rt: Runtime, raw_key: str | None, *, throttle: LoginThrottle, client: str | None
) -> ApiKey:
    """An admin or auditor key, checked as the API checks it, within the sign-in limits
    (:class:`RateLimited` past them). A refused key is a ``console.login_failed`` event."""
    throttle.attempt_from(client)
    raw = (raw_key or "").strip()
    known = _known_key(rt, raw)
    if known is not None:
        throttle.attempt_with(known.id)
    try:
        return require_role(authenticate(rt.engine, raw or None), *CONSOLE_ROLES)
    except BrokerError:
        _record_failed_login(rt, raw=raw, known=known, client=client)
        raise


def console_key(rt: Runtime, key_id: str) -> ApiKey:
    """The key a console session was opened with, if it still may use the console."""
    with session_scope(rt.engine) as session:
        row = session.get(ApiKey, key_id)
    if row is None or row.revoked_at is not None or row.role not in CONSOLE_ROLES:
        raise AuthenticationRequired("the API key this session used is no longer valid")
    return row
