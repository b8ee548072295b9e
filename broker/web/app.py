"""The FastAPI application: routers, pages, error shape and security headers."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

from fastapi import FastAPI, Request
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.responses import Response

from broker import __version__
from broker.runtime import Runtime
from broker.web.api import (
    audit,
    catalog,
    connect_sessions,
    connections,
    disclosures,
    transfers,
    user_sessions,
)
from broker.web.errors import install_error_handlers
from broker.web.pages import audit_console, connect, me
from broker.web.sessions import KEY_FILE, SessionSigner

__all__ = ["create_app", "field_label", "when"]

_HERE = Path(__file__).parent
log = logging.getLogger("broker.web")


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def _csp(request: Request) -> str:
    """Nothing but our own stylesheet and images (and connectors' logos); no script at all.

    The pages work without JavaScript, so ``script-src`` falls back to ``'none'``."""
    form_action = ["'self'"]
    # The consent form redirects to the provider's authorize URL; browsers apply
    # form-action to that redirect, so the provider's origin is allowed there.
    if request.url.path.startswith("/connect/"):
        connector_id = request.url.path.split("/")[2]
        rt: Runtime = request.app.state.runtime
        if connector_id in rt.registry:
            form_action.append(_origin(rt.registry.get(connector_id).manifest.oauth.authorize_url))
    images = ["'self'", *request.app.state.logo_origins]
    return (
        f"default-src 'none'; img-src {' '.join(images)}; style-src 'self'; "
        f"form-action {' '.join(form_action)}; frame-ancestors 'none'; base-uri 'none'"
    )


def when(value: datetime | None) -> str:
    """A time as people read it here: UTC, to the second."""
    if value is None:
        return ""
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


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
    env = app.state.templates.env
    env.filters["field_label"] = field_label
    env.filters["when"] = when
    env.globals["category_title"] = lambda key: c.title if (c := rt.catalog.get(key)) else key
    app.state.logo_origins = sorted(
        {_origin(c.manifest.logo_url) for c in rt.registry.all() if c.manifest.logo_url}
    )
    app.state.session_signer, made = SessionSigner.load_or_create(rt.settings.home / KEY_FILE)
    if made:
        log.info("created browser-session key %s (0600)", (rt.settings.home / KEY_FILE).resolve())
    https = rt.settings.resolved_base_url.startswith("https://")
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
        response.headers.setdefault("Cross-Origin-Opener-Policy", "same-origin")
        response.headers.setdefault(
            "Permissions-Policy", "camera=(), geolocation=(), microphone=(), payment=()"
        )
        if https:
            response.headers.setdefault("Strict-Transport-Security", "max-age=31536000")
        return response

    app.include_router(connect_sessions.router)
    app.include_router(user_sessions.router)
    app.include_router(catalog.router)
    app.include_router(connections.router)
    app.include_router(transfers.router)
    app.include_router(audit.router)
    app.include_router(disclosures.router)
    app.include_router(connect.router)
    app.include_router(me.router)
    app.include_router(audit_console.router)
    app.mount("/static", StaticFiles(directory=str(_HERE / "static")), name="static")

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    for prefix, sub in (mounts or {}).items():
        app.mount(prefix, sub)  # type: ignore[arg-type]
    return app
