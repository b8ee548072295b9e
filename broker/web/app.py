"""The FastAPI application: routers, pages, error shape and security headers."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from broker import __version__
from broker.flows.login_throttle import LoginThrottle
from broker.runtime import Runtime
from broker.web.api import (
    audit,
    catalog,
    connect_sessions,
    connections,
    connector_credentials,
    disclosures,
    metrics,
    notices,
    preferences,
    transfers,
    user_sessions,
    users,
    webhooks,
)
from broker.web.connect_popup import PopupOpener
from broker.web.connect_popup import router as connect_helper_router
from broker.web.csp import authorize_origin, content_security_policy, logo_origins
from broker.web.errors import UnexpectedErrorMiddleware, install_error_handlers
from broker.web.fast_route import TransferFastPath
from broker.web.idempotency import IdempotencyKeys
from broker.web.links import template_url_for
from broker.web.openapi import install_openapi
from broker.web.pages import (
    api_docs,
    audit_console,
    audit_log_pages,
    connect,
    me,
    me_terms,
    webhook_log,
)
from broker.web.request_guard import NulCharacterGuard
from broker.web.security_headers import SecurityHeaders

__all__ = ["create_app", "field_label", "when"]

_HERE = Path(__file__).parent
log = logging.getLogger("broker.web")


def _csp(request: Request) -> str:
    """The default policy (broker.web.csp): our own stylesheet and images, connectors'
    logos, no script. The consent page sets its own, with the authorize origin of its
    session; here a ``/connect/{id}`` response gets the manifest's authorize origin
    only when its host has no placeholder."""
    path: str = request.scope.get("path", "")
    state = request.app.state
    if not path.startswith("/connect/"):  # every API answer: the same policy, built once
        policy = getattr(state, "default_csp", None)
        if policy is None:
            policy = state.default_csp = content_security_policy(images=state.logo_origins)
        return policy
    form_action: list[str | None] = []
    connector_id = path.split("/")[2]
    rt: Runtime = state.runtime
    if connector_id in rt.registry:
        form_action.append(authorize_origin(rt.registry.get(connector_id).manifest))
    return content_security_policy(images=state.logo_origins, form_action=form_action)


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
    app.state.logo_origins = logo_origins(c.manifest for c in rt.registry.all())
    # Console sign-in limits, per process (or shared through the database).
    app.state.login_throttle = LoginThrottle.for_runtime(rt)
    env.globals["url_for"] = template_url_for  # links from BROKER_BASE_URL, not Host
    https = rt.settings.resolved_base_url.startswith("https://")
    install_error_handlers(app)
    # Inside ServerErrorMiddleware (so a 500 keeps the connection) and inside the
    # security headers below (so the 500 carries them too).
    app.add_middleware(TransferFastPath)  # innermost: every layer below still wraps it
    app.add_middleware(UnexpectedErrorMiddleware)
    app.add_middleware(IdempotencyKeys)  # outside it: a 500 is seen, and not kept
    app.add_middleware(NulCharacterGuard)

    app.add_middleware(PopupOpener, rt=rt)  # the connect helper's popups keep their opener
    app.add_middleware(SecurityHeaders, csp=_csp, https=https)

    app.include_router(connect_sessions.router)
    app.include_router(user_sessions.router)
    app.include_router(catalog.router)
    app.include_router(connections.router)
    app.include_router(transfers.router)
    app.include_router(metrics.router)
    app.include_router(audit.router)
    app.include_router(disclosures.router)
    app.include_router(preferences.router)
    app.include_router(users.router)
    app.include_router(notices.router)
    app.include_router(webhooks.router)
    app.include_router(connector_credentials.router)
    app.include_router(connect.router)
    app.include_router(connect_helper_router)
    app.include_router(me.router)
    app.include_router(me_terms.router)
    app.include_router(audit_console.router)
    app.include_router(webhook_log.router)
    app.include_router(api_docs.router)
    app.include_router(audit_log_pages.router)
    app.mount("/static", StaticFiles(directory=str(_HERE / "static")), name="static")
    install_openapi(app)

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    for prefix, sub in (mounts or {}).items():
        app.mount(prefix, sub)  # type: ignore[arg-type]
    return app
