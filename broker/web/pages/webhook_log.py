"""``/audit/webhooks``: the webhook endpoints and each one's delivery log, on the
auditor console (read-only; the same session as the other console pages). Shows
status, attempts and last response code of every message, never a secret."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import RedirectResponse, Response

from broker.core.errors import InvalidInput, NotFound
from broker.flows.webhook_endpoints import DELIVERY_STATUSES, list_deliveries, list_endpoints
from broker.web.deps import AuditorSession, RuntimeDep

__all__ = ["router"]

router = APIRouter(tags=["pages"], include_in_schema=False)

_PAGE = 50


@router.get("/audit/webhooks")
def console_webhooks(
    request: Request,
    rt: RuntimeDep,
    current: AuditorSession,
    endpoint: Annotated[str | None, Query(max_length=40)] = None,
    status: Annotated[str | None, Query(max_length=20)] = None,
    cursor: Annotated[str | None, Query(max_length=500)] = None,
) -> Response:
    if current is None:
        return RedirectResponse(request.url_for("console_login").path, status_code=303)
    endpoints, _ = list_endpoints(rt, limit=200, cursor=None)
    chosen = next((e for e in endpoints if e["id"] == endpoint), None)
    status = status if status in DELIVERY_STATUSES else None
    deliveries: list[dict] = []
    next_cursor = None
    problem = None
    if chosen is not None:
        try:
            deliveries, next_cursor = list_deliveries(
                rt, chosen["id"], limit=_PAGE, cursor=cursor or None, status=status
            )
        except (InvalidInput, NotFound) as exc:
            problem = exc.message
    context = {
        "endpoints": endpoints,
        "chosen": chosen,
        "deliveries": deliveries,
        "next_cursor": next_cursor,
        "status": status or "",
        "statuses": DELIVERY_STATUSES,
        "problem": problem,
        "console": current,
        "csrf": current.session.csrf,
    }
    return request.app.state.templates.TemplateResponse(request, "audit_webhooks.html", context)
