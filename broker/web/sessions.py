"""The cookies of the user's page (``/me``) and the auditor console (``/audit``).

The cookie holds only a random session id; the session itself is a row in the
database (:mod:`broker.flows.browser_sessions`), so signing out and revoking the
console's API key end it at once, wherever a copy of the cookie is. Cookies follow
the one policy of :mod:`broker.web.cookies` and last as long as their session.
"""

from __future__ import annotations

import hmac

from fastapi import Request
from fastapi.responses import Response

from broker.flows.browser_sessions import BrowserSession
from broker.web.cookies import clear_cookie, set_cookie

__all__ = [
    "AUDITOR_COOKIE",
    "USER_COOKIE",
    "BrowserSession",
    "clear_session_cookie",
    "cookie_kind",
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


def set_session_cookie(
    request: Request, response: Response, name: str, value: str, session: BrowserSession
) -> None:
    life = (session.expires_at - session.issued_at).total_seconds()
    set_cookie(response, request.app.state.runtime, name, value, path=_PATHS[name], max_age=life)


def clear_session_cookie(request: Request, response: Response, name: str) -> None:
    clear_cookie(response, request.app.state.runtime, name, path=_PATHS[name])


def csrf_matches(expected: str, given: str | None) -> bool:
    return bool(given) and hmac.compare_digest(expected.encode(), (given or "").encode())
