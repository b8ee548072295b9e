"""Every error leaves as ``{"error": {"code", "message", "details"}}`` (API)
or as a plain page (browser routes); never a stack trace or a secret."""

from __future__ import annotations

import logging
import traceback

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from broker.core.errors import BrokerError, RateLimited, error_body

__all__ = [
    "UnexpectedErrorMiddleware",
    "broker_error_response",
    "install_error_handlers",
    "render_error",
]

log = logging.getLogger("broker.web")

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_input",
}


def _wants_html(request: Request) -> bool:
    path = request.url.path
    return not (path.startswith("/v1") or path == "/openapi.json")


def _render(request: Request, status: int, code: str, message: str, details: dict) -> Response:
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    if _wants_html(request) and hasattr(request.app.state, "templates"):
        return request.app.state.templates.TemplateResponse(
            request,
            "message.html",
            {"title": "Something went wrong", "message": message, "code": code, "ok": False},
            status_code=status,
            headers=headers,
        )
    return JSONResponse(
        jsonable_encoder(error_body(code, message, details)), status_code=status, headers=headers
    )


def render_error(
    request: Request, status: int, code: str, message: str, details: dict | None = None
) -> Response:
    """The error as the route's audience reads it: the JSON shape, or a page."""
    return _render(request, status, code, message, details or {})


def _validation_problems(exc: RequestValidationError) -> list[dict]:
    problems = []
    for err in exc.errors():
        loc = [str(p) for p in err.get("loc", ()) if p != "body"]
        msg = err.get("msg", "invalid")
        if err.get("type") == "json_invalid":
            msg = "request body is not valid JSON"
        problems.append({"field": ".".join(loc) or "(body)", "message": msg})
    return problems


def broker_error_response(request: Request, exc: BrokerError) -> Response:
    """A ``BrokerError`` in the contract's shape (the handler below; also the hot
    route's, which bypasses the framework's exception handling: broker.web.fast_route)."""
    response = _render(request, exc.status, exc.code, exc.message, exc.details)
    if isinstance(exc, RateLimited):
        response.headers["Retry-After"] = str(exc.retry_after)
    return response


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(BrokerError)
    async def _broker_error(request: Request, exc: BrokerError) -> Response:
        return broker_error_response(request, exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> Response:
        problems = _validation_problems(exc)
        first = problems[0] if problems else {"field": "(body)", "message": "invalid"}
        return _render(
            request,
            422,
            "invalid_input",
            f"{first['field']}: {first['message']}",
            {"problems": problems},
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        code = _HTTP_CODES.get(exc.status_code, "http_error")
        message = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ")
        return _render(request, exc.status_code, code, message, {})

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        # Last resort, in Starlette's ServerErrorMiddleware: only errors raised outside
        # UnexpectedErrorMiddleware land here, and the server then drops the connection.
        return _internal_error(request, exc)


_INTERNAL_MESSAGE = "the broker hit an internal error; it was logged"


def _log_unexpected(method: str, path: str, exc: BaseException) -> None:
    """Where it failed, never what with: the exception's message and the query string can
    carry a token, a session link or user data, so the log gets the type and the stack."""
    frames = traceback.extract_tb(exc.__traceback__)
    stack = "".join(traceback.format_list(frames)).rstrip()
    log.error("unhandled %s on %s %s\n%s", type(exc).__name__, method, path, stack)


def _internal_error(request: Request, exc: BaseException) -> Response:
    _log_unexpected(request.method, request.url.path, exc)
    return _render(request, 500, "internal_error", _INTERNAL_MESSAGE, {})


class UnexpectedErrorMiddleware:
    """Turn an unexpected exception into the 500 error shape, and keep the connection.

    Starlette's own catch-all runs in ServerErrorMiddleware, which answers and then
    re-raises, so the server closes the client's keep-alive connection (its next request
    fails). This middleware sits inside it (``app.add_middleware``) and answers without
    re-raising. A response already under way (a stream that fails midway) cannot be
    replaced: the error goes on up, and the server cuts that connection, which tells the
    client the body is incomplete."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as exc:
            if started:
                raise
            response = _internal_error(Request(scope), exc)
            await response(scope, receive, send)
