"""The consent page, its approve/cancel form, and the OAuth callback."""

from __future__ import annotations

import hmac
import secrets
from typing import Annotated

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from broker.core.errors import SessionInvalid
from broker.flows import connect as flow
from broker.flows.callback import complete_callback
from broker.web.deps import RuntimeDep, client_ip

__all__ = ["CSRF_COOKIE", "router"]

router = APIRouter(tags=["pages"], include_in_schema=False)

CSRF_COOKIE = "broker_csrf"


def _templates(request: Request) -> Jinja2Templates:
    return request.app.state.templates


def _csrf_cookie(request: Request, response: Response, value: str) -> None:
    rt = request.app.state.runtime
    response.set_cookie(
        CSRF_COOKIE,
        value,
        max_age=rt.settings.connect_session_ttl,
        path="/connect",
        httponly=True,
        secure=rt.settings.resolved_base_url.startswith("https://"),
        samesite="lax",
    )


@router.get("/connect")
def choose(request: Request, rt: RuntimeDep, session: str | None = None) -> Response:
    """A session not bound to one connector: list the connectors to pick from."""
    if not session:
        raise SessionInvalid("this link has no session; ask the application for a new one")
    return _templates(request).TemplateResponse(
        request, "choose.html", {"connectors": rt.registry.all(), "session": session}
    )


@router.get("/connect/{connector_id}")
def consent_page(
    connector_id: str, request: Request, rt: RuntimeDep, session: str | None = None
) -> Response:
    view = flow.consent_view(rt, token=session, connector_id=connector_id)
    csrf = secrets.token_urlsafe(24)
    response = _templates(request).TemplateResponse(
        request, "consent.html", {"view": view, "session": session, "csrf": csrf}
    )
    _csrf_cookie(request, response, csrf)
    response.headers["Referrer-Policy"] = "no-referrer"
    return response


@router.post("/connect/{connector_id}")
def consent_submit(
    connector_id: str,
    request: Request,
    rt: RuntimeDep,
    session: Annotated[str, Form()],
    csrf: Annotated[str, Form()],
    decision: Annotated[str, Form()],
    categories: Annotated[list[str] | None, Form()] = None,
) -> Response:
    cookie = request.cookies.get(CSRF_COOKIE, "")
    if not cookie or not hmac.compare_digest(cookie, csrf):
        raise SessionInvalid(
            "the form has expired or was not sent from the consent page; reload it"
        )
    if decision == "cancel":
        back = flow.cancel(rt, token=session, connector_id=connector_id)
        response: Response
        if back:
            response = RedirectResponse(back, status_code=303)
        else:
            response = _templates(request).TemplateResponse(
                request,
                "message.html",
                {
                    "title": "Not connected",
                    "message": "Nothing was shared and nothing was connected.",
                    "ok": True,
                },
            )
        response.delete_cookie(CSRF_COOKIE, path="/connect")  # nothing left behind
        return response
    if decision != "approve":
        raise SessionInvalid("unknown decision")
    url = flow.approve(
        rt,
        token=session,
        connector_id=connector_id,
        optional_granted=categories or [],
        client_ip=client_ip(request),
        user_agent=request.headers.get("user-agent"),
    )
    response = RedirectResponse(url, status_code=303)
    response.delete_cookie(CSRF_COOKIE, path="/connect")
    return response


@router.get("/oauth/callback")
def callback(
    request: Request,
    rt: RuntimeDep,
    state: Annotated[str | None, Query(max_length=512)] = None,
    code: Annotated[str | None, Query(max_length=4096)] = None,
    error: Annotated[str | None, Query(max_length=200)] = None,
    error_description: Annotated[str | None, Query(max_length=1000)] = None,
) -> Response:
    outcome = complete_callback(
        rt, state=state, code=code, error=error, error_description=error_description
    )
    if outcome.return_url:
        return RedirectResponse(outcome.return_url, status_code=303)
    response = _templates(request).TemplateResponse(
        request,
        "message.html",
        {
            "title": "Connected" if outcome.ok else "Not connected",
            "message": outcome.message,
            "ok": outcome.ok,
            "connection_id": outcome.connection_id,
        },
        status_code=200 if outcome.ok else 400,
    )
    response.headers["Referrer-Policy"] = "no-referrer"
    return response
