"""FastAPI dependencies as ``Annotated`` aliases: the runtime, API-key roles, and the
browser sessions of the user's page and the auditor console."""

from __future__ import annotations

from typing import Annotated, NamedTuple

from fastapi import Depends, Request, Response

from broker.core.errors import AuthenticationRequired
from broker.flows.browser_sessions import (
    BrowserSession,
    console_key,
    open_browser_session,
    read_browser_session,
)
from broker.flows.keys import authenticate, require_role
from broker.runtime import Runtime
from broker.store.models import ApiKey
from broker.web.sessions import AUDITOR_COOKIE, USER_COOKIE, set_session_cookie

__all__ = [
    "SQL_INT_MAX",
    "AdminKey",
    "AnyKey",
    "AuditorKey",
    "AuditorSession",
    "Bearer",
    "ConsoleSession",
    "RuntimeDep",
    "UserSession",
    "auditor_session",
    "bearer_of",
    "client_ip",
    "issue_session",
    "user_session",
]


# The largest SQL INTEGER (32 bits on PostgreSQL: the type of the log's ``seq`` and of
# checkpoint ids): the upper bound of every integer query parameter, so that
# ``after=2147483648`` (or ``2**63``, past SQLite's 64 bits) is a 422, not a driver error.
SQL_INT_MAX = 2**31 - 1


class ConsoleSession(NamedTuple):
    session: BrowserSession
    key: ApiKey


# Trivial dependencies are ``async``: FastAPI runs a sync one in the threadpool, a
# hop that costs more than the dependency itself. The key lookup reads the database
# and stays sync (on the event loop it would hold up every other request: measured,
# accept latency at 16 clients got worse).
async def get_runtime(request: Request) -> Runtime:
    return request.app.state.runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


def bearer_of(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        raise AuthenticationRequired("the Authorization header must be 'Bearer <key>'")
    return value.strip()


async def bearer(request: Request) -> str | None:
    """The raw key of ``Authorization: Bearer``, unchecked (a handler that checks it
    in its own threadpool call, with ``authenticate``)."""
    return bearer_of(request)


Bearer = Annotated[str | None, Depends(bearer)]


def api_key(request: Request, rt: RuntimeDep) -> ApiKey:
    return authenticate(rt.engine, bearer_of(request))


async def admin_key(key: Annotated[ApiKey, Depends(api_key)]) -> ApiKey:
    return require_role(key, "admin")


async def auditor_key(key: Annotated[ApiKey, Depends(api_key)]) -> ApiKey:
    return require_role(key, "admin", "auditor")


AnyKey = Annotated[ApiKey, Depends(api_key)]
AdminKey = Annotated[ApiKey, Depends(admin_key)]
AuditorKey = Annotated[ApiKey, Depends(auditor_key)]


def client_ip(request: Request) -> str | None:
    return request.client.host if request.client else None


def user_session(request: Request, rt: RuntimeDep) -> BrowserSession | None:
    """The user's session from its cookie, or None (absent, unknown, ended or expired)."""
    return read_browser_session(rt, request.cookies.get(USER_COOKIE), kind="user")


def auditor_session(request: Request, rt: RuntimeDep) -> ConsoleSession | None:
    """The console session and its still-valid API key, or None."""
    session = read_browser_session(rt, request.cookies.get(AUDITOR_COOKIE), kind="auditor")
    if session is None:
        return None
    try:
        return ConsoleSession(session, console_key(rt, session.subject))
    except AuthenticationRequired:
        return None


def issue_session(
    request: Request, response: Response, rt: Runtime, kind: str, subject: str
) -> BrowserSession:
    """Open a server-side session and set its cookie on ``response``; a console session
    (``auditor``) is tied to the API key ``subject``."""
    key_id = subject if kind == "auditor" else None
    value, session = open_browser_session(rt, kind, subject, api_key_id=key_id)
    cookie = USER_COOKIE if kind == "user" else AUDITOR_COOKIE
    set_session_cookie(request, response, cookie, value, session)
    return session


UserSession = Annotated[BrowserSession | None, Depends(user_session)]
AuditorSession = Annotated[ConsoleSession | None, Depends(auditor_session)]
