"""The cookies of the user's page (``/me``) and the auditor console (``/audit``).

The cookie holds only a random session id; the session itself is a row in the
database (:mod:`broker.flows.browser_sessions`), so signing out and revoking the
console's API key end it at once, wherever a copy of the cookie is. Cookies are
``HttpOnly``, ``SameSite=Lax``, path-scoped, ``Secure`` whenever the broker's
public URL (``BROKER_BASE_URL``) is https, and last as long as their session.
"""

from __future__ import annotations

import hmac

from fastapi import Request
from fastapi.responses import Response

from broker.flows.browser_sessions import BrowserSession

__all__ = [
    "AUDITOR_COOKIE",
    "USER_COOKIE",
    "BrowserSession",
    "clear_session_cookie",
    "cookie_kind",
    "cookies_secure",
    "csrf_matches",
    "set_session_cookie",
]

USER_COOKIE = "broker_me"
AUDITOR_COOKIE = "broker_audit"
_PATHS = {USER_COOKIE: "/me", AUDITOR_COOKIE: "/audit"}
_KINDS = {USER_COOKIE: "user", AUDITOR_COOKIE: "auditor"}


def cookie_kind(name: str) -> str:
    """The session kind a cookie carries."""
    return _KINDS[name]


def cookies_secure(request: Request) -> bool:
    """Cookies are ``Secure`` whenever the broker's public URL is https."""
    return request.app.state.runtime.settings.resolved_base_url.startswith("https://")


def set_session_cookie(
    request: Request, response: Response, name: str, value: str, session: BrowserSession
) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max(0, int((session.expires_at - session.issued_at).total_seconds())),
        path=_PATHS[name],
        httponly=True,
        secure=cookies_secure(request),
        samesite="lax",
    )


def clear_session_cookie(request: Request, response: Response, name: str) -> None:
    response.delete_cookie(
        name, path=_PATHS[name], httponly=True, secure=cookies_secure(request), samesite="lax"
    )


def csrf_matches(expected: str, given: str | None) -> bool:
    return bool(given) and hmac.compare_digest(expected.encode(), (given or "").encode())
