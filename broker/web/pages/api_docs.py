"""``/docs``: the API reference as one server-rendered page, made from the same OpenAPI
document as ``/openapi.json``. No script: the broker's CSP allows none, so an
interactive viewer (Swagger UI, Redoc) would need the policy relaxed for its bundle;
this page needs nothing beyond the broker's own stylesheet, and works without a CDN."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

__all__ = ["reference", "router"]

router = APIRouter(tags=["pages"], include_in_schema=False)

_METHODS = ("get", "post", "put", "patch", "delete")


def _ref_name(schema: dict[str, Any] | None) -> str | None:
    if not schema:
        return None
    if "$ref" in schema:
        return schema["$ref"].rsplit("/", 1)[1]
    for alt in schema.get("anyOf", []):
        if name := _ref_name(alt):
            return name
    return None


def _type(schema: dict[str, Any]) -> str:
    """A property's type in a few words: ``string``, ``array of Transfer``, ``integer | null``."""
    if "$ref" in schema:
        return str(_ref_name(schema))
    if "anyOf" in schema:
        return " | ".join(_type(s) for s in schema["anyOf"])
    kind = schema.get("type", "any")
    if kind == "array":
        return f"array of {_type(schema.get('items', {}))}"
    if "enum" in schema:
        return " | ".join(f'"{v}"' for v in schema["enum"])
    return f"{kind} ({schema['format']})" if "format" in schema else str(kind)


def _operation(path: str, method: str, op: dict[str, Any]) -> dict[str, Any]:
    body = op.get("requestBody", {}).get("content", {}).get("application/json", {})
    responses = []
    for status, entry in op.get("responses", {}).items():
        content = entry.get("content", {})
        json = content.get("application/json", {})
        responses.append(
            {
                "status": status,
                "description": entry.get("description", ""),
                "schema": _ref_name(json.get("schema")),
                "media": [m for m in content if m != "application/json"],
                "codes": list(json.get("examples", {})) if status[0] in "45" else [],
            }
        )
    return {
        "id": op.get("operationId", ""),
        "method": method.upper(),
        "path": path,
        "description": op.get("description", ""),
        "roles": op.get("x-roles", []),
        "parameters": [
            {
                "name": p["name"],
                "in": p["in"],
                "required": p.get("required", False),
                "type": _type(p.get("schema", {})),
                "description": p.get("description", ""),
                "deprecated": p.get("deprecated", False) or p.get("schema", {}).get("deprecated"),
            }
            for p in op.get("parameters", [])
        ],
        "body": _ref_name(body.get("schema")),
        "responses": responses,
    }


def _schema(name: str, schema: dict[str, Any]) -> dict[str, Any]:
    required = set(schema.get("required", []))
    return {
        "name": name,
        "description": schema.get("description", ""),
        "properties": [
            {
                "name": prop,
                "type": _type(sub),
                "required": prop in required,
                "description": sub.get("description", ""),
                "deprecated": bool(sub.get("deprecated")),
            }
            for prop, sub in schema.get("properties", {}).items()
        ],
    }


def reference(doc: dict[str, Any]) -> dict[str, Any]:
    """What the page shows, from the OpenAPI document: operations by tag, then schemas."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for path, item in doc.get("paths", {}).items():
        for method in _METHODS:
            if op := item.get(method):
                tag = (op.get("tags") or ["other"])[0]
                groups.setdefault(tag, []).append(_operation(path, method, op))
    schemas = doc.get("components", {}).get("schemas", {})
    return {
        "title": doc["info"]["title"],
        "version": doc["info"]["version"],
        "groups": groups,
        "schemas": [_schema(n, s) for n, s in sorted(schemas.items())],
    }


@router.get("/docs")
def api_docs(request: Request) -> Response:
    return request.app.state.templates.TemplateResponse(
        request, "api_docs.html", {"ref": reference(request.app.openapi())}
    )
