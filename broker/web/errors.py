"""Every error leaves as ``{"error": {"code", "message", "details"}}`` (API)
or as a plain page (browser routes); never a stack trace or a secret."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from broker.core.errors import BrokerError

__all__ = ["error_body", "install_error_handlers"]

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


def error_body(code: str, message: str, details: dict | None = None) -> dict:
    return {"error": {"code": code, "message": message, "details": details or {}}}


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


def _validation_problems(exc: RequestValidationError) -> list[dict]:
    problems = []
    for err in exc.errors():
        loc = [str(p) for p in err.get("loc", ()) if p != "body"]
        msg = err.get("msg", "invalid")
        if err.get("type") == "json_invalid":
            msg = "request body is not valid JSON"
        problems.append({"field": ".".join(loc) or "(body)", "message": msg})
    return problems


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(BrokerError)
    async def _broker_error(request: Request, exc: BrokerError) -> Response:
        return _render(request, exc.status, exc.code, exc.message, exc.details)

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
        log.error(
            "unhandled %s on %s %s",
            type(exc).__name__,
            request.method,
            request.url.path,
            exc_info=exc,
        )
        return _render(
            request, 500, "internal_error", "the broker hit an internal error; it was logged", {}
        )
