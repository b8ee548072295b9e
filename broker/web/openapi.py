"""The OpenAPI 3.1 document at /openapi.json, completed from the routes: the bearer
security scheme and each operation's roles (``x-roles``), the broker's error shape on
every operation in place of FastAPI's ``{detail: [...]}`` 422, and the request bodies
of the routes that read theirs by hand (``request_body``)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute, iter_route_contexts
from pydantic import BaseModel

from broker.web.api.error_responses import ErrorBody, error_response
from broker.web.deps import admin_key, api_key, auditor_key

__all__ = ["api_routes", "build_openapi", "install_openapi", "request_body", "roles_of"]

_REF = "#/components/schemas/{model}"
_ERROR_REF = {"$ref": _REF.format(model="ErrorBody")}
_BODIES: list[type[BaseModel]] = [ErrorBody]
_SECURITY = {
    "bearerAuth": {
        "type": "http",
        "scheme": "bearer",
        "description": "an API key (`broker admin create-key --role admin|auditor`)",
    }
}
# The dependency that checks the key, and the roles it lets through.
_ROLE_DEPS: dict[Any, list[str]] = {
    admin_key: ["admin"],
    auditor_key: ["admin", "auditor"],
    api_key: ["admin", "auditor"],
}


def request_body(model: type[BaseModel], description: str = "") -> dict[str, Any]:
    """``openapi_extra`` of a route that parses its JSON body itself (for speed, or for
    its own error messages): the body is documented as ``model`` without FastAPI
    validating it."""
    if model not in _BODIES:
        _BODIES.append(model)
    return {
        "requestBody": {
            "required": True,
            "description": description,
            "content": {
                "application/json": {"schema": {"$ref": _REF.format(model=model.__name__)}}
            },
        }
    }


def api_routes(app: FastAPI) -> Iterator[Any]:
    """Every API route of ``app``, with its full path (FastAPI keeps an included router
    as one branch; ``iter_route_contexts`` walks them): each has the APIRoute's fields."""
    for ctx in iter_route_contexts(app.routes):
        if isinstance(ctx.original_route, APIRoute):
            yield ctx


def roles_of(route: Any) -> list[str]:
    """The roles a route admits: ``x-roles`` of its ``openapi_extra``, or those of the
    key dependency it declares (AdminKey, AuditorKey, AnyKey)."""
    declared = (route.openapi_extra or {}).get("x-roles")
    if declared is not None:
        return list(declared)
    stack = list(route.dependant.dependencies)
    while stack:
        dep = stack.pop()
        if dep.call in _ROLE_DEPS:
            return _ROLE_DEPS[dep.call]
        stack.extend(dep.dependencies)
    return []


def _add_errors(responses: dict[str, Any], status: int, codes: list[str]) -> None:
    """Declare ``codes`` under ``status``, next to those the route declared itself."""
    entry = responses.get(str(status))
    fresh = error_response(status, codes)
    fresh.pop("model")
    fresh["content"]["application/json"]["schema"] = dict(_ERROR_REF)
    if entry is None or "content" not in entry:
        responses[str(status)] = fresh
        return
    body = entry["content"].setdefault("application/json", {})
    if body.get("schema") != _ERROR_REF:  # FastAPI's validation error: replaced
        entry.update(fresh)
        return
    examples = body.setdefault("examples", {})
    for code in codes:
        examples.setdefault(code, fresh["content"]["application/json"]["examples"][code])
    entry["description"] = "error: " + ", ".join(f"`{c}`" for c in examples)


def _tidy(responses: dict[str, Any]) -> None:
    """Errors are JSON even on a route whose answer is text (FastAPI files the model
    under the route's media type); a route that streams text declares no JSON answer."""
    for status, entry in responses.items():
        content = entry.get("content", {})
        if status[0] in "45":
            for media in [m for m in content if m != "application/json"]:
                if content[media].get("schema") == _ERROR_REF:
                    content.setdefault("application/json", {})["schema"] = content.pop(media)[
                        "schema"
                    ]
        elif len(content) > 1 and content.get("application/json", {}).get("schema") == {}:
            del content["application/json"]


def _complete(op: dict[str, Any], roles: list[str]) -> None:
    responses = op.setdefault("responses", {})
    _tidy(responses)
    for media in op.get("requestBody", {}).get("content", {}).values():
        if "$ref" in media.get("schema", {}):  # request_body's model, not FastAPI's "Body"
            media["schema"] = {"$ref": media["schema"]["$ref"]}
    if roles:
        op["security"] = [{"bearerAuth": []}]
        op["x-roles"] = roles
        line = "Roles: " + ", ".join(f"`{r}`" for r in roles) + "."
        op["description"] = f"{line}\n\n{op.get('description', '')}".strip()
        _add_errors(responses, 401, ["unauthenticated"])
        if "auditor" not in roles:  # an auditor key is refused
            _add_errors(responses, 403, ["forbidden"])
    else:
        op["security"] = []
    if op.get("parameters") or op.get("requestBody") or "422" in responses:
        _add_errors(responses, 422, ["invalid_input"])
    _add_errors(responses, 500, ["internal_error"])


def _schemas(doc: dict[str, Any]) -> None:
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    for model in _BODIES:
        schema = model.model_json_schema(ref_template=_REF, mode="validation")
        for name, sub in schema.pop("$defs", {}).items():
            schemas.setdefault(name, sub)
        schemas[model.__name__] = schema
    doc["components"]["securitySchemes"] = _SECURITY


_IDEMPOTENCY_HEADER = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": "1-200 visible ASCII characters: a retry with the same key and body gets "
    "the first answer again (`Idempotent-Replayed: true`), for 24 hours",
    "schema": {"type": "string", "minLength": 1, "maxLength": 200},
}


def _idempotent(op: dict[str, Any]) -> None:
    """Every POST under /v1 takes an ``Idempotency-Key`` (broker.web.idempotency)."""
    params = op.setdefault("parameters", [])
    if any(p["name"] == "Idempotency-Key" for p in params):
        return  # the transfer route's own keys, documented with it
    params.append(dict(_IDEMPOTENCY_HEADER))
    _add_errors(op["responses"], 409, ["conflict", "idempotency_key_reused"])


def build_openapi(app: FastAPI) -> dict[str, Any]:
    doc = get_openapi(
        title=app.title,
        version=app.version,
        description=app.description,
        routes=app.routes,
        tags=app.openapi_tags,
    )
    for route in api_routes(app):
        if not route.include_in_schema:
            continue
        roles = roles_of(route)
        for method in route.methods:
            op = doc["paths"].get(route.path_format, {}).get(method.lower())
            if op is not None:
                op.pop("x-roles", None)
                _complete(op, roles)
                if method == "POST" and route.path.startswith("/v1/"):
                    _idempotent(op)
    _schemas(doc)
    return doc


def install_openapi(app: FastAPI) -> None:
    """Serve the completed document (built once, on first request)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = build_openapi(app)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
