"""``ETag`` and ``If-None-Match`` (RFC 9110 §8.8.3, §13.1.2) for answers that change
rarely (the catalog, the connectors): the tag is the SHA-256 of the body sent, so a
client that kept it gets ``304 Not Modified`` and no body until the body changes."""

from __future__ import annotations

import hashlib
from typing import Any

from fastapi import Request, Response
from pydantic import BaseModel

__all__ = ["NOT_MODIFIED", "json_with_etag"]

NOT_MODIFIED: dict[int | str, dict[str, Any]] = {
    304: {"description": "not modified: the `ETag` given in `If-None-Match` is current"}
}


def _matches(header: str | None, tag: str) -> bool:
    """Weak comparison, as ``If-None-Match`` uses: ``W/"x"`` matches ``"x"``."""
    if header is None:
        return False
    if header.strip() == "*":
        return True
    return any(t.strip().removeprefix("W/") == tag for t in header.split(","))


def json_with_etag(request: Request, body: BaseModel) -> Response:
    """``body`` as JSON with its ``ETag``; ``304`` without a body when the request's
    ``If-None-Match`` names it. ``Cache-Control: private, no-cache``: a cache may keep
    it, and must ask again each time."""
    content = body.model_dump_json().encode()
    tag = '"' + hashlib.sha256(content).hexdigest()[:32] + '"'
    headers = {"ETag": tag, "Cache-Control": "private, no-cache"}
    if _matches(request.headers.get("if-none-match"), tag):
        return Response(status_code=304, headers=headers)
    return Response(content, media_type="application/json", headers=headers)
