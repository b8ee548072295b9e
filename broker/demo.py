"""``broker demo``: the broker plus a sandbox third party in one process.

The sandbox (``broker.sandbox``) is a real OAuth 2 authorization server and a
small API, mounted under ``/sandbox``; the sandbox connector points at it. A
demo page at ``/demo`` starts a connect session for a demo user in one click.
"""

from __future__ import annotations

import os
import secrets
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import RedirectResponse, Response

from broker.core.catalog import Catalog
from broker.core.connector import Connector, ConnectorSource
from broker.core.manifest import parse_manifest
from broker.flows.connect import create_connect_session
from broker.runtime import Runtime
from broker.sandbox import SandboxClient, SandboxProvider, create_sandbox_app

__all__ = ["DEMO_USER", "SANDBOX_CLIENT_ID", "demo_router", "sandbox_connector", "sandbox_setup"]

DEMO_USER = "demo-user"
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


def sandbox_setup(callback_url: str) -> tuple[SandboxProvider, FastAPI]:
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
                redirect_uris=[callback_url],
            )
        ]
    )
    return provider, create_sandbox_app(provider)


def demo_router(rt: Runtime, provider: SandboxProvider) -> APIRouter:
    router = APIRouter(include_in_schema=False)

    @router.get("/")
    def home() -> Response:
        return RedirectResponse("/demo", status_code=303)

    @router.get("/demo")
    def demo_page(request: Request) -> Response:
        return request.app.state.templates.TemplateResponse(
            request,
            "demo.html",
            {"user": DEMO_USER, "received": list(provider.received)[-20:]},
        )

    @router.post("/demo/connect")
    def demo_connect() -> Response:
        issued = create_connect_session(
            rt, user_id=DEMO_USER, connector_id="sandbox", created_by="demo"
        )
        return RedirectResponse(issued.url, status_code=303)

    return router
