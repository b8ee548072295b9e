"""Security headers on every page and API answer, as pure ASGI middleware.

A pure-ASGI layer (not Starlette's ``BaseHTTPMiddleware``) adds the headers to the
``http.response.start`` message as it passes: no extra task, no buffering, no
threadpool hop per request. A header the endpoint already set wins (the consent
page sets its own ``Content-Security-Policy``). The sandbox under ``/sandbox``
(a pretend third party) keeps its own headers.
"""

from __future__ import annotations

from collections.abc import Callable

from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["SecurityHeaders"]

_FIXED = (
    ("X-Frame-Options", "DENY"),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
    ("Cache-Control", "no-store"),
    ("Cross-Origin-Opener-Policy", "same-origin"),
    ("Permissions-Policy", "camera=(), geolocation=(), microphone=(), payment=()"),
)


class SecurityHeaders:
    def __init__(self, app: ASGIApp, *, csp: Callable[[Request], str], https: bool) -> None:
        self.app = app
        self.csp = csp
        self.fixed = (
            (*_FIXED, ("Strict-Transport-Security", "max-age=31536000")) if https else _FIXED
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path", "").startswith("/sandbox"):
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                if "content-security-policy" not in headers:
                    headers["Content-Security-Policy"] = self.csp(Request(scope))
                for name, value in self.fixed:
                    if name.lower() not in headers:
                        headers[name] = value
            await send(message)

        await self.app(scope, receive, with_headers)
