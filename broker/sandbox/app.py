"""HTTP face of the sandbox third party ("Sandbox Co."): OAuth endpoints and a small API.

Routes, relative to wherever the app is mounted:

* ``GET  /oauth/authorize``  consent page (or an error page / error redirect);
* ``POST /oauth/authorize``  the user's decision: ``confirm=yes`` or ``confirm=no``;
* ``POST /oauth/token``      authorization_code (PKCE S256) and refresh_token (rotating);
* ``POST /oauth/revoke``     RFC 7009;
* ``POST /api/{action}``     bearer-protected; stores the request and answers 201;
* ``GET  /privacy``, ``GET /terms``  the policy pages (versioned: ``ETag`` ``"<page>-v<n>"``);
  ``POST`` to either (loopback only) serves the request body as the page's new version;
* ``GET  /api/received``     what the API has stored, as JSON (no authentication, so it
  answers loopback clients only: :func:`loopback_only`).

Handlers are plain functions run in FastAPI's threadpool; request bodies are read by async
dependencies beforehand. Self-links are built from the ASGI ``root_path``, so they are right
both standalone and under ``app.mount("/sandbox", ...)``.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

from authlib.oauth2.rfc6749 import (
    MissingAuthorizationError,
    OAuth2Error,
    UnsupportedTokenTypeError,
)
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.templating import Jinja2Templates
from starlette.responses import Response

from .models import ReceivedRequest
from .provider import Fault, PolicyPage, SandboxProvider
from .requests import IncomingRequest, read_incoming
from .server import SandboxAuthorizationServer, create_resource_protector

__all__ = ["SCOPE_DESCRIPTIONS", "create_sandbox_app", "is_loopback_client", "loopback_only"]

SCOPE_DESCRIPTIONS = {
    "messages:write": "post messages on your behalf",
    "profile": "read your profile (name and email)",
}
_AUTHORIZE_PARAMS = (
    "response_type",
    "client_id",
    "redirect_uri",
    "scope",
    "state",
    "code_challenge",
    "code_challenge_method",
)
_REDACTED_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie"})
_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
_templates = Jinja2Templates(directory=Path(__file__).parent / "templates")

Incoming = Annotated[IncomingRequest, Depends(read_incoming)]


async def _read_body(request: Request) -> bytes:
    return await request.body()


RawBody = Annotated[bytes, Depends(_read_body)]


_FORWARDED = ("forwarded", "x-forwarded-for", "x-real-ip")


def is_loopback_client(request: Request) -> bool:
    """Whether the request comes from this machine: a loopback peer address and no
    proxy header (a reverse proxy on this machine would make every client look local)."""
    host = request.client.host if request.client else ""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if not address.is_loopback:
        return False
    return not any(name in request.headers for name in _FORWARDED)


def loopback_only(request: Request) -> None:
    """A dependency for routes that hand out data or keys without authentication: they
    exist for someone at this machine (the demo), never for the network."""
    if not is_loopback_client(request):
        raise HTTPException(403, "this demo route answers only on this machine (loopback)")


def _http_error(_request: Request, exc: Exception) -> JSONResponse:
    if not isinstance(exc, HTTPException):  # registered for HTTPException only
        raise exc
    code = {403: "forbidden", 404: "not_found", 405: "method_not_allowed"}.get(
        exc.status_code, "http_error"
    )
    message = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ")
    return JSONResponse(
        {"error": {"code": code, "message": message, "details": {}}},
        status_code=exc.status_code,
        headers=_NO_STORE,
    )


def _fault_response(fault: Fault) -> JSONResponse:
    return JSONResponse(
        fault.body, status_code=fault.status, headers={**_NO_STORE, **fault.headers}
    )


def _redacted_headers(request: Request) -> dict[str, str]:
    headers: dict[str, str] = {}
    for name, value in request.headers.items():  # names arrive lower-case
        value = "REDACTED" if name in _REDACTED_HEADERS else value
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    return headers


def _parse_json(raw: bytes) -> Any:
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        return None


_POLICY_PAGE = (
    '<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{title}</title></head>'
    "<body><main><h1>{title}</h1><div>{body}</div></main></body></html>"
)


def create_sandbox_app(provider: SandboxProvider, *, local_only: bool = True) -> FastAPI:
    """The sandbox provider's ASGI app, serving ``provider``'s state; ``local_only``:
    the unauthenticated ``/api/received`` answers loopback clients only."""
    server = SandboxAuthorizationServer(provider)
    protector = create_resource_protector(provider)
    app = FastAPI(title="Sandbox Co.", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.provider = provider
    app.add_exception_handler(HTTPException, _http_error)

    def error_page(request: Request, error: OAuth2Error) -> Response:
        """Redirect the error to the client if authlib validated its redirect URI, else show
        a page: RFC 6749 §4.1.2.1 forbids redirecting for an unknown client or bad URI."""
        if error.redirect_uri:
            return server.handle_error_response(None, error)
        context = {"error": error.error, "description": error.get_error_description()}
        return _templates.TemplateResponse(request, "error.html", context, status_code=400)

    def policy_page(page: PolicyPage, request: Request) -> Response:
        fault = provider.take_fault(page)
        if fault is not None:
            return _fault_response(fault)
        if provider.policy_gate is not None:
            provider.policy_gate.wait(30)
        with provider.lock:
            title, body = provider.policy_pages[page]
            version = provider.policy_versions[page]
        etag = f'"{page}-v{version}"'
        if request.headers.get("if-none-match") == etag:
            return Response(status_code=304, headers={"ETag": etag})
        return HTMLResponse(
            _POLICY_PAGE.format(title=title, body=body),
            headers={"ETag": etag},
        )

    def set_policy_page(page: PolicyPage, raw: bytes) -> Response:
        version = provider.set_policy(page, raw.decode("utf-8", errors="replace"))
        return JSONResponse({"page": page, "version": version})

    # GET: the page as the broker fetches it; POST (loopback only): a new version of it,
    # the request body as its HTML, so the demo and tests can change the policy.
    local = [Depends(loopback_only)] if local_only else []

    @app.get("/privacy")
    def privacy(request: Request) -> Response:
        return policy_page("privacy", request)

    @app.get("/terms")
    def terms(request: Request) -> Response:
        return policy_page("terms", request)

    @app.post("/privacy", dependencies=local)
    def set_privacy(raw: RawBody) -> Response:
        return set_policy_page("privacy", raw)

    @app.post("/terms", dependencies=local)
    def set_terms(raw: RawBody) -> Response:
        return set_policy_page("terms", raw)

    @app.get("/oauth/authorize")
    def authorize_page(request: Request, incoming: Incoming) -> Response:
        try:
            with provider.lock:
                grant = server.get_consent_grant(incoming, end_user=provider.user_id)
        except OAuth2Error as error:
            return error_page(request, error)
        query = dict(incoming.query)
        scopes = grant.request.scope.split()
        context = {
            "action": request.scope.get("root_path", "") + "/oauth/authorize",
            "user_id": provider.user_id,
            "client_id": grant.client.get_client_id(),
            "scopes": [(scope, SCOPE_DESCRIPTIONS.get(scope, scope)) for scope in scopes],
            "hidden": [(name, query[name]) for name in _AUTHORIZE_PARAMS if name in query],
        }
        return _templates.TemplateResponse(request, "authorize.html", context)

    @app.post("/oauth/authorize")
    def authorize_decision(request: Request, incoming: Incoming) -> Response:
        approved = incoming.form_value("confirm") == "yes"
        try:
            with provider.lock:
                grant = server.get_consent_grant(incoming, end_user=provider.user_id)
                # authlib answers through server.handle_response: a Response (stubs: object)
                return server.create_authorization_response(  # type: ignore[return-value]
                    grant.request, grant_user=provider.user_id if approved else None, grant=grant
                )
        except OAuth2Error as error:
            return error_page(request, error)

    @app.post("/oauth/token")
    def token(incoming: Incoming) -> Response:
        provider.record_token_request(incoming.form_value("grant_type") or "")
        fault = provider.take_fault("token")
        if fault is not None:
            return _fault_response(fault)
        try:
            with provider.lock:
                answer = server.create_token_response(incoming)
        except OAuth2Error as error:  # raised before authlib's own handling, e.g. transport
            return server.handle_error_response(None, error)
        if provider.token_gate is not None:  # issued (and rotated) already; answer late
            provider.token_gate.wait(30)
        # authlib answers through server.handle_response: a Response (stubs: a tuple)
        return answer  # type: ignore[return-value]

    @app.post("/oauth/revoke")
    def revoke(incoming: Incoming) -> Response:
        fault = provider.take_fault("revocation")
        if fault is not None:
            return _fault_response(fault)
        try:
            with provider.lock:
                return server.create_endpoint_response("revocation", incoming)
        except OAuth2Error as error:
            return server.handle_error_response(None, error)

    @app.get("/api/received", dependencies=[Depends(loopback_only)] if local_only else [])
    def received() -> list[dict[str, Any]]:
        with provider.lock:
            return [item.to_json() for item in provider.received]

    @app.post("/api/{action}", status_code=201)
    def call_api(action: str, request: Request, raw: RawBody) -> Response:
        fault = provider.take_fault("api")
        if fault is not None:
            return _fault_response(fault)
        incoming = IncomingRequest(request.method, str(request.url), request.headers)
        try:
            protector.validate_request(None, server.create_json_request(incoming))
        except (MissingAuthorizationError, UnsupportedTokenTypeError):
            # RFC 6750 §3.1: no credentials -> challenge without an error code.
            return JSONResponse(
                {"error": "missing_authorization", "error_description": "Bearer token required."},
                status_code=401,
                headers={"WWW-Authenticate": 'Bearer realm="sandbox"'},
            )
        except OAuth2Error as error:
            return server.handle_error_response(None, error)
        item = ReceivedRequest(
            action=action,
            method=request.method,
            path=request.url.path,
            body=_parse_json(raw),
            headers=_redacted_headers(request),
            received_at=datetime.now(UTC),
            id=uuid.uuid4().hex,
            size=len(raw),
            sha256=hashlib.sha256(raw).hexdigest(),
        )
        provider.record_received(item)
        if provider.answer_gate is not None:
            provider.answer_gate.wait(30)
        return JSONResponse({"id": item.id, "ok": True}, status_code=201)

    return app
