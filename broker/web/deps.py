"""FastAPI dependencies as ``Annotated`` aliases: the runtime, API-key roles, and the
browser sessions of the user's page and the auditor console."""

from __future__ import annotations

from typing import Annotated, NamedTuple

from fastapi import Depends, Request

from broker.core.errors import AuthenticationRequired
from broker.flows.browser_sessions import console_key
from broker.flows.keys import authenticate, require_role
from broker.runtime import Runtime
from broker.store.models import ApiKey
from broker.web.sessions import (
    AUDITOR_COOKIE,
    AUDITOR_TTL,
    USER_COOKIE,
    USER_TTL,
    BrowserSession,
    SessionSigner,
)

__all__ = [
    "AdminKey",
    "AnyKey",
    "AuditorKey",
    "AuditorSession",
    "ConsoleSession",
    "RuntimeDep",
    "UserSession",
    "auditor_session",
    "client_ip",
    "issue_session",
    "user_session",
]


class ConsoleSession(NamedTuple):
    session: BrowserSession
    key: ApiKey


def get_runtime(request: Request) -> Runtime:
    return request.app.state.runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        raise AuthenticationRequired("the Authorization header must be 'Bearer <key>'")
    return value.strip()


def api_key(request: Request, rt: RuntimeDep) -> ApiKey:
    return authenticate(rt.engine, _bearer(request))


def admin_key(key: Annotated[ApiKey, Depends(api_key)]) -> ApiKey:
    return require_role(key, "admin")


def auditor_key(key: Annotated[ApiKey, Depends(api_key)]) -> ApiKey:
    return require_role(key, "admin", "auditor")


AnyKey = Annotated[ApiKey, Depends(api_key)]
AdminKey = Annotated[ApiKey, Depends(admin_key)]
AuditorKey = Annotated[ApiKey, Depends(auditor_key)]


def client_ip(request: Request) -> str | None:
    return request.client.host if request.client else None


def _now(rt: Runtime) -> int:
    return int(rt.clock().timestamp())


def user_session(request: Request, rt: RuntimeDep) -> BrowserSession | None:
    """The user's session from its cookie, or None (absent, forged or expired)."""
    signer: SessionSigner = request.app.state.session_signer
    return signer.read(request.cookies.get(USER_COOKIE), kind="user", now=_now(rt))


def auditor_session(request: Request, rt: RuntimeDep) -> ConsoleSession | None:
    """The console session and its still-valid API key, or None."""
    signer: SessionSigner = request.app.state.session_signer
    session = signer.read(request.cookies.get(AUDITOR_COOKIE), kind="auditor", now=_now(rt))
    if session is None:
        return None
    try:
        return ConsoleSession(session, console_key(rt, session.subject))
    except AuthenticationRequired:
        return None


def issue_session(request: Request, rt: Runtime, kind: str, subject: str) -> str:
    signer: SessionSigner = request.app.state.session_signer
    ttl = USER_TTL if kind == "user" else AUDITOR_TTL
    value, _ = signer.issue(kind, subject, now=_now(rt), ttl=ttl)
    return value


UserSession = Annotated[BrowserSession | None, Depends(user_session)]
AuditorSession = Annotated[ConsoleSession | None, Depends(auditor_session)]
