"""The JavaScript connect helper: ``/broker-connect.js``, and what the connect flow's
pages need so that a popup it opens can tell the host's page how the connect ended.

- ``GET /broker-connect.js`` serves the static file (no build step, no CDN), cacheable
  and loadable from the host's pages (another origin).
- The finished pages (the callback's outcome page, and the page after cancelling)
  carry the outcome in a hidden element and load that script, which posts
  ``{source: "broker-connect", status, connection_id}`` to ``window.opener`` at each
  origin of ``BROKER_CONNECT_ORIGINS`` (postMessage delivers only to the opener's real
  origin). Their policy then allows ``script-src 'self'``; with the setting empty
  they stay script-free. The page reads the same with JavaScript off.
- A popup keeps its opener only if no page in it says ``Cross-Origin-Opener-Policy:
  same-origin`` (the broker's default), so with ``BROKER_CONNECT_ORIGINS`` set the
  connect flow's pages (``/connect…``, ``/oauth/callback…``) answer ``unsafe-none``
  (:class:`PopupOpener`). Framing stays refused (``frame-ancestors 'none'``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from broker.runtime import Runtime
from broker.web.csp import content_security_policy

__all__ = ["PopupOpener", "finished_page", "router"]

SCRIPT = Path(__file__).parent / "static" / "broker-connect.js"
_FLOW_PATHS = ("/connect", "/oauth/callback")

router = APIRouter(include_in_schema=False)


@router.get("/broker-connect.js", name="broker_connect_js")
def broker_connect_js() -> FileResponse:
    return FileResponse(
        SCRIPT,
        media_type="text/javascript; charset=utf-8",
        headers={
            "Cache-Control": "public, max-age=3600",
            "Cross-Origin-Resource-Policy": "cross-origin",
        },
    )


def finished_page(
    request: Request, rt: Runtime, *, status: str, connection_id: str | None
) -> tuple[dict[str, Any], str | None]:
    """The template context and the ``Content-Security-Policy`` of a finished page:
    ``({}, None)`` (nothing added, the default policy) without connect origins."""
    origins = rt.settings.connect_origin_list
    if not origins:
        return {}, None
    context = {
        "connect_outcome": {
            "status": status,
            "connection_id": connection_id,
            "origins": " ".join(origins),
        }
    }
    policy = content_security_policy(images=request.app.state.logo_origins, scripts=True)
    return context, policy


class PopupOpener:
    """``Cross-Origin-Opener-Policy: unsafe-none`` on the connect flow's pages when
    ``BROKER_CONNECT_ORIGINS`` is set (set before :class:`SecurityHeaders`, which
    leaves a header already there alone)."""

    def __init__(self, app: ASGIApp, *, rt: Runtime) -> None:
        self.app = app
        self.rt = rt

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if not path.startswith(_FLOW_PATHS) or not self.rt.settings.connect_origin_list:
            await self.app(scope, receive, send)
            return

        async def with_header(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                if "cross-origin-opener-policy" not in headers:
                    headers["Cross-Origin-Opener-Policy"] = "unsafe-none"
            await send(message)

        await self.app(scope, receive, with_header)
