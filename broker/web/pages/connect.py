"""The consent page, its approve/cancel form, and the OAuth callbacks.

Approving sets the OAuth binding cookie: ``HttpOnly``, ``SameSite=Lax`` (sent on
the provider's top-level redirect back), ``__Host-`` prefixed, ``Secure`` and
``Path=/`` when the base URL is https. It holds the nonces of this browser's open
attempts (the newest few, so two tabs can connect at once); the callback needs the
attempt's nonce and removes it.
"""

from __future__ import annotations

import hmac
import re
import secrets
from typing import Annotated

from fastapi import APIRouter, Form, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from broker.core import routes
from broker.core.errors import SessionInvalid
from broker.flows.approve import approve
from broker.flows.callback import CallbackOutcome, complete_callback
from broker.flows.connect import cancel
from broker.flows.consent_page import consent_view
from broker.flows.oauth_clients import offered_connectors
from broker.runtime import Runtime
from broker.web.connect_popup import finished_page
from broker.web.cookies import clear_cookie, https, set_cookie
from broker.web.csp import authorize_origin, content_security_policy
from broker.web.deps import RuntimeDep, client_ip

__all__ = ["CSRF_COOKIE", "binding_cookie_name", "router"]

router = APIRouter(tags=["pages"], include_in_schema=False)

CSRF_COOKIE = "broker_csrf"
_BINDING = "broker_oauth"
_MAX_NONCES = 3
_NONCE = re.compile(r"^[A-Za-z0-9_-]{20,100}$")


def binding_cookie_name(rt: Runtime) -> str:
    return f"__Host-{_BINDING}" if https(rt) else _BINDING


def _nonces(request: Request, rt: Runtime) -> list[str]:
    raw = request.cookies.get(binding_cookie_name(rt), "")
    return [n for n in raw.split(".") if _NONCE.fullmatch(n)][:_MAX_NONCES]


def _set_nonces(response: Response, rt: Runtime, nonces: list[str]) -> None:
    name = binding_cookie_name(rt)
    if not nonces:
        clear_cookie(response, rt, name, path="/")
        return
    joined = ".".join(nonces[:_MAX_NONCES])
    set_cookie(response, rt, name, joined, path="/", max_age=rt.settings.oauth_state_ttl)


def _templates(request: Request) -> Jinja2Templates:
    return request.app.state.templates


def _csrf_cookie(request: Request, response: Response, value: str) -> None:
    rt = request.app.state.runtime
    set_cookie(
        response, rt, CSRF_COOKIE, value, path="/connect", max_age=rt.settings.connect_session_ttl
    )


@router.get(routes.CONNECT)
def choose(request: Request, rt: RuntimeDep, session: str | None = None) -> Response:
    """A session not bound to one connector: list the connectors to pick from."""
    if not session:
        raise SessionInvalid("this link has no session; ask the application for a new one")
    return _templates(request).TemplateResponse(
        request, "choose.html", {"connectors": offered_connectors(rt), "session": session}
    )


@router.get(routes.CONNECT_TO)
def consent_page(
    connector_id: str, request: Request, rt: RuntimeDep, session: str | None = None
) -> Response:
    view = consent_view(rt, token=session, connector_id=connector_id)
    csrf = secrets.token_urlsafe(24)
    response = _templates(request).TemplateResponse(
        request, "consent.html", {"view": view, "session": session, "csrf": csrf}
    )
    _csrf_cookie(request, response, csrf)
    response.headers["Referrer-Policy"] = "no-referrer"
    # form-action: the authorize origin of this session, its host placeholders filled
    response.headers["Content-Security-Policy"] = content_security_policy(
        images=request.app.state.logo_origins,
        form_action=[authorize_origin(view.connector.manifest, view.settings)],
    )
    return response


@router.post(routes.CONNECT_TO)
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
        back = cancel(rt, token=session, connector_id=connector_id)
        response: Response
        if back:
            response = RedirectResponse(back, status_code=303)
        else:
            extra, policy = finished_page(request, rt, status="cancelled", connection_id=None)
            response = _templates(request).TemplateResponse(
                request,
                "message.html",
                {
                    "title": "Not connected",
                    "message": "Nothing was shared and nothing was connected.",
                    "ok": True,
                    **extra,
                },
            )
            if policy:
                response.headers["Content-Security-Policy"] = policy
        # nothing left behind
        clear_cookie(response, request.app.state.runtime, CSRF_COOKIE, path="/connect")
        return response
    if decision != "approve":
        raise SessionInvalid("unknown decision")
    approval = approve(
        rt,
        token=session,
        connector_id=connector_id,
        optional_granted=categories or [],
        client_ip=client_ip(request),
        user_agent=request.headers.get("user-agent"),
    )
    response = RedirectResponse(approval.authorize_url, status_code=303)
    clear_cookie(response, request.app.state.runtime, CSRF_COOKIE, path="/connect")
    _set_nonces(response, rt, [approval.browser_nonce, *_nonces(request, rt)])
    return response


State = Annotated[str | None, Query(max_length=512)]
Code = Annotated[str | None, Query(max_length=4096)]
Error = Annotated[str | None, Query(max_length=200)]
ErrorDescription = Annotated[str | None, Query(max_length=1000)]
Issuer = Annotated[str | None, Query(max_length=500)]


@router.get(routes.OAUTH_CALLBACK)
def callback(
    request: Request,
    rt: RuntimeDep,
    state: State = None,
    code: Code = None,
    error: Error = None,
    error_description: ErrorDescription = None,
    iss: Issuer = None,
) -> Response:
    """The shared callback, for redirect URIs registered before per-connector ones."""
    return _finish(
        request, rt, rt.settings.callback_url, state, code, error, error_description, iss
    )


@router.get(routes.OAUTH_CALLBACK_FOR)
def connector_callback(
    request: Request,
    rt: RuntimeDep,
    connector_id: Annotated[str, PathParam(pattern=r"^[a-z][a-z0-9_-]{1,62}$")],
    state: State = None,
    code: Code = None,
    error: Error = None,
    error_description: ErrorDescription = None,
    iss: Issuer = None,
) -> Response:
    """The connector's own callback: an answer for another connector's attempt is refused."""
    url = rt.settings.connector_callback_url(connector_id)
    return _finish(request, rt, url, state, code, error, error_description, iss)


def _finish(
    request: Request,
    rt: Runtime,
    redirect_uri: str,
    state: str | None,
    code: str | None,
    error: str | None,
    error_description: str | None,
    iss: str | None,
) -> Response:
    nonces = _nonces(request, rt)
    outcome: CallbackOutcome = complete_callback(
        rt,
        state=state,
        code=code,
        error=error,
        error_description=error_description,
        redirect_uri=redirect_uri,
        browser_nonces=nonces,
        iss=iss,
    )
    response = _outcome_page(request, outcome)
    if outcome.browser_nonce is not None:  # this attempt is over: its nonce goes
        _set_nonces(response, rt, [n for n in nonces if n != outcome.browser_nonce])
    return response


# The callback's status as a return URL and the connect helper say it.
_OUTCOMES = {"active": "connected", "pending_confirmation": "pending_confirmation"}


def _outcome_page(request: Request, outcome: CallbackOutcome) -> Response:
    if outcome.return_url:
        return RedirectResponse(outcome.return_url, status_code=303)
    extra, policy = finished_page(
        request,
        request.app.state.runtime,
        status=_OUTCOMES.get(outcome.status or "", "error") if outcome.ok else "error",
        connection_id=outcome.connection_id,
    )
    response = _templates(request).TemplateResponse(
        request,
        "message.html",
        {
            "title": "Connected" if outcome.ok else "Not connected",
            "message": outcome.message,
            "ok": outcome.ok,
            "connection_id": outcome.connection_id,
            **extra,
        },
        status_code=200 if outcome.ok else 400,
    )
    response.headers["Referrer-Policy"] = "no-referrer"
    if policy:
        response.headers["Content-Security-Policy"] = policy
    return response
