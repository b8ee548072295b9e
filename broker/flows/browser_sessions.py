"""Who a browser is: a user (through a one-time link the host creates) or an auditor
(through an API key typed into the console's sign-in form).

The cookies that keep these sessions afterwards are the web layer's
(``broker.web.sessions``); here is what needs the database.
"""

from __future__ import annotations

from sqlmodel import col, select, update

from broker.core.errors import AuthenticationRequired, SessionInvalid
from broker.core.tokens import digest
from broker.flows.connect import IssuedSession, create_connect_session
from broker.flows.keys import authenticate, require_role
from broker.runtime import Runtime
from broker.store.db import session_scope
from broker.store.models import ApiKey, ConnectSession

__all__ = [
    "CONSOLE_ROLES",
    "console_key",
    "create_user_session",
    "redeem_user_session",
    "sign_in_with_key",
]

CONSOLE_ROLES = ("admin", "auditor")


def create_user_session(rt: Runtime, *, user_id: str, created_by: str | None) -> IssuedSession:
    """A one-time link to the user's own page, ``BASE_URL/me?session=…``."""
    return create_connect_session(rt, user_id=user_id, created_by=created_by, kind="user")


def redeem_user_session(rt: Runtime, token: str | None) -> str:
    """Spend a user-session link; returns its user id. A link works once."""
    if not token:
        raise SessionInvalid("this link has no session; open the page again from the platform")
    now = rt.clock()
    with session_scope(rt.engine) as session:
        row = session.exec(
            select(ConnectSession).where(ConnectSession.token_hash == digest(token))
        ).first()
        if row is None or row.kind != "user":
            raise SessionInvalid("this link is not valid; open the page again from the platform")
        if row.used_at is not None:
            raise SessionInvalid("this link has already been used; open the page again")
        if row.expires_at <= now:
            raise SessionInvalid("this link has expired; open the page again from the platform")
        result = session.exec(
            update(ConnectSession)
            .where(col(ConnectSession.id) == row.id, col(ConnectSession.used_at).is_(None))
            .values(used_at=now)
        )
        if result.rowcount != 1:
            raise SessionInvalid("this link has already been used; open the page again")
        return row.user_id


def sign_in_with_key(rt: Runtime, raw_key: str | None) -> ApiKey:
    """An admin or auditor key, checked as the API checks it."""
    return require_role(authenticate(rt.engine, (raw_key or "").strip() or None), *CONSOLE_ROLES)


def console_key(rt: Runtime, key_id: str) -> ApiKey:
    """The key a console session was opened with, if it still may use the console."""
    with session_scope(rt.engine) as session:
        row = session.get(ApiKey, key_id)
    if row is None or row.revoked_at is not None or row.role not in CONSOLE_ROLES:
        raise AuthenticationRequired("the API key this session used is no longer valid")
    return row
