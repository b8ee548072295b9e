"""Browser sessions for the user's page (``/me``) and the auditor console (``/audit``).

A session is a signed, expiring cookie, not a database row:

    v1.<base64url(JSON payload)>.<base64url(HMAC-SHA256(key, "broker-session/v1|" + payload))>

The payload holds only the session's ``kind`` (``user`` or ``auditor``), its
subject (a user id, or an API key's *id*, never the key), a per-session CSRF
secret, and the issue and expiry times. The key is 32 random bytes in
``BROKER_HOME/session.key`` (mode 0600), created on first start; every broker
process that shares ``BROKER_HOME`` (as they already share the token key
file) accepts the others' cookies. No table, so no migration.

The price of holding no server state: signing out deletes the cookie from the
browser but cannot cancel a copy of it. Sessions are therefore short
(:data:`USER_TTL`, :data:`AUDITOR_TTL`, absolute, never extended), cookies are
``HttpOnly`` and path-scoped, and an auditor session is checked against its
API key on every request, so revoking the key ends every session made with it.
Deleting ``session.key`` ends every session at once.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import Response

__all__ = [
    "AUDITOR_COOKIE",
    "AUDITOR_TTL",
    "KEY_FILE",
    "USER_COOKIE",
    "USER_TTL",
    "BrowserSession",
    "SessionSigner",
    "clear_session_cookie",
    "cookies_secure",
    "csrf_matches",
    "set_session_cookie",
]

USER_COOKIE = "broker_me"
AUDITOR_COOKIE = "broker_audit"
USER_TTL = 30 * 60
AUDITOR_TTL = 4 * 60 * 60
KEY_FILE = "session.key"
_PATHS = {USER_COOKIE: "/me", AUDITOR_COOKIE: "/audit"}
_VERSION = "v1"
_CONTEXT = b"broker-session/v1|"


@dataclass(frozen=True)
class BrowserSession:
    kind: str
    subject: str
    csrf: str
    issued_at: int
    expires_at: int


def _b64e(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _b64d(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class SessionSigner:
    """Issues and reads session cookies with one HMAC key."""

    def __init__(self, key: bytes) -> None:
        if len(key) < 32:
            raise ValueError("a session key needs at least 32 bytes")
        self._key = key

    @classmethod
    def load_or_create(cls, path: Path) -> tuple[SessionSigner, bool]:
        """The key at ``path`` (created with mode 0600 when absent); says whether it made one."""
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return cls(_b64d(path.read_text().strip())), False
        key = secrets.token_bytes(32)
        with os.fdopen(fd, "w") as fh:
            fh.write(_b64e(key) + "\n")
        return cls(key), True

    def _mac(self, payload: str) -> str:
        return _b64e(hmac.new(self._key, _CONTEXT + payload.encode(), hashlib.sha256).digest())

    def issue(self, kind: str, subject: str, *, now: int, ttl: int) -> tuple[str, BrowserSession]:
        session = BrowserSession(
            kind=kind,
            subject=subject,
            csrf=secrets.token_urlsafe(24),
            issued_at=now,
            expires_at=now + ttl,
        )
        body = {"k": kind, "s": subject, "c": session.csrf, "i": now, "e": now + ttl}
        payload = _b64e(json.dumps(body, separators=(",", ":"), sort_keys=True).encode())
        return f"{_VERSION}.{payload}.{self._mac(payload)}", session

    def read(self, value: str | None, *, kind: str, now: int) -> BrowserSession | None:
        """The session in ``value`` if it is ours, of this ``kind`` and unexpired; else None."""
        if not value:
            return None
        parts = value.split(".")
        if len(parts) != 3 or parts[0] != _VERSION:
            return None
        payload, mac = parts[1], parts[2]
        if not hmac.compare_digest(self._mac(payload), mac):
            return None
        try:
            body: Any = json.loads(_b64d(payload))
            session = BrowserSession(
                kind=str(body["k"]),
                subject=str(body["s"]),
                csrf=str(body["c"]),
                issued_at=int(body["i"]),
                expires_at=int(body["e"]),
            )
        except (ValueError, KeyError, TypeError, binascii.Error):
            return None
        if session.kind != kind or session.expires_at <= now:
            return None
        return session


def cookies_secure(request: Request) -> bool:
    """Cookies are ``Secure`` whenever the broker's public URL is https."""
    return request.app.state.runtime.settings.resolved_base_url.startswith("https://")


def set_session_cookie(request: Request, response: Response, name: str, value: str) -> None:
    ttl = USER_TTL if name == USER_COOKIE else AUDITOR_TTL
    response.set_cookie(
        name,
        value,
        max_age=ttl,
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
