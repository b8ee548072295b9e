"""Refuse, before any route runs, request lines no route could use: U+0000 in the path
or the query string. PostgreSQL text columns refuse the character, so a lookup such as
``GET /v1/connections/%00`` would otherwise fail in the driver (a 500) instead of
answering 404; no identifier, filter or session token the broker issues contains it."""

from __future__ import annotations

from urllib.parse import unquote_to_bytes

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from broker.web.errors import render_error

__all__ = ["NulCharacterGuard"]


def _has_nul(scope: Scope) -> str | None:
    raw_path = scope.get("raw_path") or scope.get("path", "").encode("utf-8", "surrogateescape")
    if b"\x00" in unquote_to_bytes(raw_path) or "\x00" in scope.get("path", ""):
        return "path"
    if b"\x00" in unquote_to_bytes(scope.get("query_string", b"")):
        return "query"
    return None


class NulCharacterGuard:
    """A pure ASGI middleware: 422 ``invalid_input`` for a NUL in the path or query."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and (where := _has_nul(scope)):
            response = render_error(
                Request(scope),
                422,
                "invalid_input",
                f"the request {where} contains the character U+0000, which is not accepted",
                {"field": where},
            )
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)
