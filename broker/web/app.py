"""The FastAPI application: routers, pages, error shape and security headers."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from urllib.parse import urlsplit

from fastapi import FastAPI, Request
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.responses import Response

from broker import __version__
from broker.runtime import Runtime
from broker.web.api import audit, catalog, connect_sessions, connections, transfers
from broker.web.errors import install_error_handlers
from broker.web.pages import connect

__all__ = ["create_app"]

_HERE = Path(__file__).parent


def _csp(request: Request) -> str:
    form_action = "'self'"
    # The consent form redirects to the provider's authorize URL; browsers apply
    # form-action to that redirect, so the provider's origin is allowed there.
    if request.url.path.startswith("/connect/"):
        connector_id = request.url.path.split("/")[2]
        rt: Runtime = request.app.state.runtime
        if connector_id in rt.registry:
            parts = urlsplit(rt.registry.get(connector_id).manifest.oauth.authorize_url)
            form_action += f" {parts.scheme}://{parts.netloc}"
    return (
        "default-src 'self'; img-src 'self' https: data:; style-src 'self'; script-src 'self'; "
        f"form-action {form_action}; frame-ancestors 'none'; base-uri 'none'; object-src 'none'"
    )


def field_label(pattern: str) -> str:
    """A catalog field pattern in words: ``**.email`` -> ``email (in any object)``."""
    parts = pattern.split(".")
    anywhere = parts[0] == "**"
    below = parts[-1] == "**"
    core = [("any field" if p == "*" else p) for p in parts if p != "**"]
    text = ".".join(core)
    if below:
        text += " and everything in it"
    if anywhere:
        text += " (in any object)"
    return text


def create_app(rt: Runtime, *, mounts: dict[str, object] | None = None) -> FastAPI:
    app = FastAPI(
        title="Integration broker",
        version=__version__,
        description="Scoped sharing of user data with third-party integrations.",
        docs_url=None,
        redoc_url=None,
    )
    app.state.runtime = rt
    app.state.templates = Jinja2Templates(directory=str(_HERE / "templates"))
    app.state.templates.env.filters["field_label"] = field_label
    install_error_handlers(app)

    @app.middleware("http")
    async def security_headers(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        response: Response = await call_next(request)
        if request.url.path.startswith("/sandbox"):
            return response
        response.headers.setdefault("Content-Security-Policy", _csp(request))
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "no-referrer")
        response.headers.setdefault("Cache-Control", "no-store")
        return response

    app.include_router(connect_sessions.router)
    app.include_router(catalog.router)
    app.include_router(connections.router)
    app.include_router(transfers.router)
    app.include_router(audit.router)
    app.include_router(connect.router)
    app.mount("/static", StaticFiles(directory=str(_HERE / "static")), name="static")

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    for prefix, sub in (mounts or {}).items():
        app.mount(prefix, sub)  # type: ignore[arg-type]
    return app
