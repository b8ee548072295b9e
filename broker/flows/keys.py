"""API keys: created once, shown once, stored as a SHA-256 digest.

Revoking a key also ends, in the same transaction, every console session
(``browser_sessions``) opened with it."""

from __future__ import annotations

from sqlalchemy import Engine

from broker.core.errors import AuthenticationRequired, InvalidInput, NotFound, PermissionDenied
from broker.core.tokens import digest, new_secret
from broker.store.api_keys import find_key, list_keys
from broker.store.browser_sessions import end_key_sessions
from broker.store.db import session_scope
from broker.store.models import ApiKey
from broker.store.types import utcnow

__all__ = [
    "ROLES",
    "authenticate",
    "create_api_key",
    "list_api_keys",
    "require_role",
    "revoke_api_key",
]

ROLES = ("admin", "auditor")
KEY_PREFIX = "brk_"


def create_api_key(engine: Engine, *, role: str, label: str | None = None) -> tuple[ApiKey, str]:
    """A new key; returns the row and the raw key, which is never stored."""
    if role not in ROLES:
        raise InvalidInput(f"role must be one of {', '.join(ROLES)}", details={"role": role})
    raw = new_secret(KEY_PREFIX)
    row = ApiKey(id="key_" + new_secret(nbytes=6), key_hash=digest(raw), role=role, label=label)
    with session_scope(engine) as session:
        session.add(row)
    return row, raw


def authenticate(engine: Engine, raw: str | None) -> ApiKey:
    if not raw:
        raise AuthenticationRequired("an API key is required (Authorization: Bearer <key>)")
    # Every API request comes here: one indexed read on a plain connection (no ORM
    # session, no transaction to commit); nothing cached, so a revocation holds at once.
    with engine.connect() as conn:
        found = find_key(conn, digest=digest(raw))
    if found is None or found.revoked_at is not None:
        raise AuthenticationRequired("the API key is not valid")
    return found


def require_role(key: ApiKey, *roles: str) -> ApiKey:
    if key.role not in roles:
        raise PermissionDenied(
            f"this needs a key with role {' or '.join(roles)}; this key is {key.role}",
            details={"required": list(roles), "role": key.role},
        )
    return key


def list_api_keys(engine: Engine) -> list[ApiKey]:
    with session_scope(engine) as session:
        return list_keys(session)


def revoke_api_key(engine: Engine, key_id: str) -> ApiKey:
    with session_scope(engine) as session:
        row = session.get(ApiKey, key_id)
        if row is None:
            raise NotFound(f"no API key {key_id!r}", details={"key_id": key_id})
        now = utcnow()
        if row.revoked_at is None:
            row.revoked_at = now
            session.add(row)
        end_key_sessions(session, api_key_id=key_id, at=now)
    return row
