"""``broker demo``: the broker plus a sandbox third party in one process.

The sandbox (``broker.sandbox``) is a real OAuth 2 authorization server and a
small API, mounted under ``/sandbox``; the sandbox connector points at it. A
demo page at ``/demo`` plays the host application: in one click each it starts
a connect session for a demo user, shares a sample update over the connection,
opens the user's own page (``/me``) and hands out an auditor key for ``/audit``.

Those helpers need no authentication, so the demo must not be reachable from a
network: ``broker demo`` refuses a non-loopback ``--host`` (or ``BROKER_BASE_URL``)
unless told ``--i-know-this-is-public``, the helpers (and the sandbox's
``/api/received``) answer loopback clients only, and each start revokes the demo
keys of the previous one (:func:`issue_demo_admin_key`).
"""

from __future__ import annotations

import os
import secrets
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, FastAPI, Form, Request
from fastapi.responses import RedirectResponse, Response

from broker.core.catalog import Catalog
from broker.core.connector import Connector, ConnectorSource
from broker.core.errors import BrokerError
from broker.core.gateway import TransferRequest
from broker.core.manifest import parse_manifest
from broker.core.statuses import ConnectionStatus
from broker.core.urls import is_allowed_return_url
from broker.flows.browser_sessions import create_user_session
from broker.flows.connect import create_connect_session
from broker.flows.connections import list_connections
from broker.flows.keys import create_api_key, list_api_keys, revoke_api_key
from broker.flows.submit import create_transfer
from broker.runtime import Runtime
from broker.sandbox import SandboxClient, SandboxProvider, create_sandbox_app
from broker.sandbox.app import loopback_only

__all__ = [
    "DEMO_KEY_LABEL",
    "DEMO_USER",
    "SAMPLE_UPDATE",
    "SANDBOX_CLIENT_ID",
    "demo_router",
    "issue_demo_admin_key",
    "sandbox_connector",
    "sandbox_manifest",
    "sandbox_setup",
]

DEMO_USER = "demo-user"
DEMO_KEY_LABEL = "demo"
SANDBOX_CLIENT_ID = "broker-demo"
CLIENT_ID_ENV = "BROKER_SANDBOX_CLIENT_ID"
CLIENT_SECRET_ENV = "BROKER_SANDBOX_CLIENT_SECRET"


def sandbox_manifest(sandbox: str) -> dict[str, Any]:
    """The sandbox connector's manifest; ``sandbox`` is the sandbox app's root URL."""
    return {
        "id": "sandbox",
        "name": "Sandbox Co.",
        "description": "A pretend work-chat service that runs inside the broker for the demo.",
        "privacy_policy_url": f"{sandbox}/privacy",
        "terms_url": f"{sandbox}/terms",
        "oauth": {
            "authorize_url": f"{sandbox}/oauth/authorize",
            "token_url": f"{sandbox}/oauth/token",
            "revoke_url": f"{sandbox}/oauth/revoke",
            "scopes": ["messages:write", "profile"],
            "client_id": f"env:{CLIENT_ID_ENV}",
            "client_secret": f"env:{CLIENT_SECRET_ENV}",
        },
        "data": [
            {
                "category": "user.content.work_items",
                "purpose": "Post work item updates to your team channel",
                "required": True,
            },
            {
                "category": "user.name",
                "purpose": "Show who made the change",
                "required": False,
            },
            {
                "category": "user.contact.email",
                "purpose": "Mention the assignee so they are notified",
                "required": False,
            },
        ],
        "actions": [
            {
                "name": "post_message",
                "method": "POST",
                "url": f"{sandbox}/api/post_message",
                "description": "Post a work item update to a channel",
            }
        ],
    }


def sandbox_connector(catalog: Catalog, sandbox_url: str) -> Connector:
    manifest = parse_manifest(sandbox_manifest(sandbox_url), catalog, source="builtin:sandbox")
    return Connector(manifest, ConnectorSource("builtin", "broker.demo"))


def sandbox_setup(callback_url: str, *, public: bool = False) -> tuple[SandboxProvider, FastAPI]:
    """A sandbox provider with the broker registered as its OAuth client.

    The client secret is generated per process and handed over the way an
    operator would: through the environment variable the manifest references.
    """
    secret = os.environ.get(CLIENT_SECRET_ENV) or secrets.token_urlsafe(32)
    os.environ[CLIENT_ID_ENV] = SANDBOX_CLIENT_ID
    os.environ[CLIENT_SECRET_ENV] = secret
    provider = SandboxProvider(
        clients=[
            SandboxClient(
                client_id=SANDBOX_CLIENT_ID,
                client_secret=secret,
                # the sandbox connector's own callback, and the shared one
                redirect_uris=[f"{callback_url}/sandbox", callback_url],
            )
        ]
    )
    return provider, create_sandbox_app(provider, local_only=not public)


SAMPLE_UPDATE = {
    "work_item": {
        "id": "W-42",
        "title": "Ship the consent page",
        "status": "done",
        "assignee": {"name": "Ann Lee", "email": "ann@example.com"},
    },
    "author": {"name": "Ann Lee"},
}


def _active_connection(rt: Runtime) -> str | None:
    for conn, _ in list_connections(rt, DEMO_USER):
        if conn.status == ConnectionStatus.ACTIVE and conn.connector_id == "sandbox":
            return conn.id
    return None


def issue_demo_admin_key(rt: Runtime) -> tuple[str, list[str]]:
    """A new demo admin key; every earlier demo key (admin, and the auditor keys the demo
    page handed out) is revoked first, with the console sessions opened with them.
    Returns the raw key and the ids revoked."""
    revoked = []
    for key in list_api_keys(rt.engine):
        if key.label == DEMO_KEY_LABEL and key.revoked_at is None:
            revoke_api_key(rt.engine, key.id)
            revoked.append(key.id)
    _, raw = create_api_key(rt.engine, role="admin", label=DEMO_KEY_LABEL)
    return raw, revoked


def demo_router(rt: Runtime, provider: SandboxProvider, *, public: bool = False) -> APIRouter:
    """The demo page and its helpers. They act without authentication, so they answer
    loopback clients only, unless the operator started a ``public`` demo on purpose."""
    guard = [] if public else [Depends(loopback_only)]
    router = APIRouter(include_in_schema=False, dependencies=guard)
    # The demo page is the "host application" a connect returns to.
    back = f"{rt.settings.resolved_base_url}/demo"
    if not is_allowed_return_url(back, rt.settings.return_url_prefixes):
        rt.settings.return_url_allowlist = ",".join([*rt.settings.return_url_prefixes, back])

    def page(request: Request, name: str, context: dict[str, Any]) -> Response:
        return request.app.state.templates.TemplateResponse(request, name, context)

    @router.get("/")
    def home() -> Response:
        return RedirectResponse("/demo", status_code=303)

    @router.get("/demo")
    def demo_page(request: Request) -> Response:
        return page(
            request,
            "demo.html",
            {
                "user": DEMO_USER,
                "received": list(provider.received)[-20:],
                "connection_id": _active_connection(rt),
                "result": dict(request.query_params),
            },
        )

    @router.post("/demo/connect")
    def demo_connect() -> Response:
        issued = create_connect_session(
            rt, user_id=DEMO_USER, connector_id="sandbox", return_url=back, created_by="demo"
        )
        return RedirectResponse(issued.url, status_code=303)

    @router.post("/demo/share")
    def demo_share(mode: Annotated[str, Form(pattern="^(drop|reject)$")] = "drop") -> Response:
        """Share a sample update the way the host's backend would (admin API)."""
        connection_id = _active_connection(rt)
        if connection_id is None:
            return RedirectResponse("/demo?shared=no_connection", status_code=303)
        request = TransferRequest(action="post_message", data=SAMPLE_UPDATE, mode=mode)
        try:
            transfer, _ = create_transfer(
                rt, connection_id=connection_id, request=request, actor="demo"
            )
            outcome = transfer.status
        except BrokerError as exc:
            outcome = exc.code
        return RedirectResponse(f"/demo?{urlencode({'shared': outcome})}", status_code=303)

    @router.post("/demo/me")
    def demo_me() -> Response:
        issued = create_user_session(rt, user_id=DEMO_USER, created_by="demo")
        return RedirectResponse(issued.url, status_code=303)

    @router.post("/demo/auditor-key")
    def demo_auditor_key(request: Request) -> Response:
        _, raw = create_api_key(rt.engine, role="auditor", label=DEMO_KEY_LABEL)
        return page(request, "demo_key.html", {"key": raw})

    return router
