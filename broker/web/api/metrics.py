"""``GET /metrics``: Prometheus text format, for an admin key or ``BROKER_METRICS_TOKEN``."""

from __future__ import annotations

import hmac

from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from broker.metrics import CONTENT_TYPE
from broker.web.deps import RuntimeDep, admin_key, api_key

__all__ = ["router"]

router = APIRouter(tags=["operations"])


@router.get(
    "/metrics",
    operation_id="getMetrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE: {"schema": {"type": "string"}}}}},
    openapi_extra={"x-roles": ["admin"]},
)
async def metrics(request: Request, rt: RuntimeDep) -> Response:
    token = rt.settings.metrics_token
    given = request.headers.get("authorization", "")
    if not (token and hmac.compare_digest(given.encode(), f"Bearer {token}".encode())):
        await admin_key(await run_in_threadpool(api_key, request, rt))
    body = await run_in_threadpool(rt.metrics.render)
    return Response(body, media_type=CONTENT_TYPE)
