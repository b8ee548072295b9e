"""The error shape of every /v1 answer, as the OpenAPI document declares it: one schema
(``{"error": {"code", "message", "details"}}``) and, per operation, the statuses and
codes it can give (``responses=errors(NotFound, ...)`` on a route)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from broker.core.errors import BrokerError, error_body

__all__ = ["ErrorBody", "ErrorDetail", "error_codes", "error_response", "errors"]

# Codes the web layer gives itself (broker.web.errors), besides the error tree's.
WEB_CODES = {
    "bad_request": 400,
    "method_not_allowed": 405,
    "unsupported_media_type": 415,
    "internal_error": 500,
}


def error_codes() -> dict[str, int]:
    """Every code an answer can carry, with its status: the tree of broker.core.errors
    (walked, so a new class is listed without editing this) and the web layer's own."""
    codes: dict[str, int] = {}
    stack = [BrokerError]
    while stack:
        cls = stack.pop()
        if cls is not BrokerError:
            codes.setdefault(cls.code, cls.status)
        stack.extend(cls.__subclasses__())
    codes.update(WEB_CODES)
    return dict(sorted(codes.items()))


class ErrorDetail(BaseModel):
    model_config = ConfigDict(json_schema_extra=lambda schema: _code_enum(schema))

    code: str = Field(description="stable, machine-readable; see the list in docs/api.md")
    message: str = Field(description="for people; never a token, a secret or a stack trace")
    details: dict[str, Any] = Field(description="JSON values that depend on the code")


def _code_enum(schema: dict[str, Any]) -> None:
    """The codes as ``examples``, not an ``enum``: a client generated today must still
    read an error whose code is added later."""
    schema["properties"]["code"]["examples"] = list(error_codes())


class ErrorBody(BaseModel):
    error: ErrorDetail


_MESSAGES = {
    "unauthenticated": "a valid API key is required (Authorization: Bearer <key>)",
    "forbidden": "this route needs an API key of role admin",
    "not_found": "no such resource",
    "invalid_input": "limit: Input should be less than or equal to 500",
    "internal_error": "the broker hit an internal error; it was logged",
}


def _example(code: str) -> dict[str, Any]:
    message = _MESSAGES.get(code, code.replace("_", " "))
    details: dict[str, Any] = {}
    if code == "forbidden":
        details = {"required": ["admin"], "role": "auditor"}
    elif code == "invalid_input":
        details = {"problems": [{"field": "limit", "message": message.split(": ", 1)[1]}]}
    return {
        "summary": code,
        "value": error_body(code, message, details),
    }


def error_response(status: int, codes: list[str]) -> dict[str, Any]:
    """One status's entry of an operation's ``responses``, its codes as examples."""
    return {
        "description": "error: " + ", ".join(f"`{c}`" for c in codes),
        "model": ErrorBody,
        "content": {"application/json": {"examples": {c: _example(c) for c in codes}}},
    }


def errors(*kinds: type[BrokerError] | str) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for a route: each status its errors can have, with their codes.
    (401, 403 ``forbidden``, 422 ``invalid_input`` and 500 are added to every operation
    that can give them by broker.web.openapi.)"""
    known = error_codes()
    by_status: dict[int, list[str]] = {}
    for kind in kinds:
        code = kind if isinstance(kind, str) else kind.code
        by_status.setdefault(known[code], []).append(code)
    return {status: error_response(status, codes) for status, codes in sorted(by_status.items())}
