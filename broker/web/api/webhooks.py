"""Webhook endpoints of the host (admin): register, list, change, rotate, delete,
delivery log, ping. The signing secret is in the answer to create and rotate only."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, Field

from broker.core.errors import NotFound
from broker.core.webhooks import EVENT_TYPES
from broker.flows.webhook_endpoints import (
    DELIVERY_STATUSES,
    create_endpoint,
    delete_endpoint,
    delivery_dict,
    endpoint_dict,
    get_endpoint,
    list_deliveries,
    list_endpoints,
    rotate_secret,
    send_ping,
    update_endpoint,
)
from broker.web.api.error_responses import errors
from broker.web.api.schemas import _In
from broker.web.deps import AdminKey, RuntimeDep

__all__ = ["router"]

router = APIRouter(prefix="/v1/webhook-endpoints", tags=["webhooks"])

_EVENTS_HELP = "event types to receive: " + ", ".join(EVENT_TYPES)


class WebhookEndpointCreate(_In):
    url: str = Field(max_length=2000, description="https (http only for a loopback host)")
    events: list[str] = Field(min_length=1, max_length=len(EVENT_TYPES), description=_EVENTS_HELP)
    description: str | None = Field(default=None, max_length=500)


class WebhookEndpointUpdate(_In):
    url: str | None = Field(default=None, max_length=2000)
    events: list[str] | None = Field(
        default=None, min_length=1, max_length=len(EVENT_TYPES), description=_EVENTS_HELP
    )
    description: str | None = Field(default=None, max_length=500)
    enabled: bool | None = Field(
        default=None, description="true re-enables a disabled endpoint (pending deliveries resume)"
    )


class WebhookEndpointPublic(BaseModel):
    id: str
    url: str
    events: list[str]
    description: str | None
    enabled: bool
    disabled_reason: str | None
    failure_run: int
    previous_secret_expires_at: str | None
    created_at: str
    updated_at: str


class WebhookEndpointWithSecret(WebhookEndpointPublic):
    secret: str = Field(description="the whsec_… signing secret: shown this once")


class WebhookEndpointPage(BaseModel):
    webhook_endpoints: list[WebhookEndpointPublic]
    next_cursor: str | None


class WebhookDeliveryPublic(BaseModel):
    id: str
    endpoint_id: str
    event_type: str
    status: str
    attempts: int
    next_attempt_at: str | None
    last_status_code: int | None
    last_error: str | None
    data: dict[str, Any]
    created_at: str
    completed_at: str | None


class WebhookDeliveryPage(BaseModel):
    deliveries: list[WebhookDeliveryPublic]
    next_cursor: str | None


Limit = Annotated[int, Query(ge=1, le=200)]
Cursor = Annotated[str | None, Query(max_length=500)]


@router.post(
    "",
    status_code=201,
    operation_id="createWebhookEndpoint",
    response_model=WebhookEndpointWithSecret,
    responses=errors("invalid_input", "egress_denied"),
)
def create(
    body: WebhookEndpointCreate, rt: RuntimeDep, _key: AdminKey, response: Response
) -> WebhookEndpointWithSecret:
    row, secret = create_endpoint(
        rt, url=body.url, events=body.events, description=body.description
    )
    response.headers["Location"] = f"/v1/webhook-endpoints/{row.id}"
    return WebhookEndpointWithSecret(**endpoint_dict(row), secret=secret)


@router.get(
    "",
    operation_id="listWebhookEndpoints",
    response_model=WebhookEndpointPage,
    responses=errors("invalid_input"),
)
def list_all(
    rt: RuntimeDep, _key: AdminKey, limit: Limit = 50, cursor: Cursor = None
) -> WebhookEndpointPage:
    items, nxt = list_endpoints(rt, limit=limit, cursor=cursor)
    return WebhookEndpointPage(
        webhook_endpoints=[WebhookEndpointPublic(**i) for i in items], next_cursor=nxt
    )


@router.get(
    "/{endpoint_id}",
    operation_id="getWebhookEndpoint",
    response_model=WebhookEndpointPublic,
    responses=errors(NotFound),
)
def get_one(endpoint_id: str, rt: RuntimeDep, _key: AdminKey) -> WebhookEndpointPublic:
    return WebhookEndpointPublic(**endpoint_dict(get_endpoint(rt, endpoint_id)))


@router.patch(
    "/{endpoint_id}",
    operation_id="updateWebhookEndpoint",
    response_model=WebhookEndpointPublic,
    responses=errors(NotFound, "egress_denied"),
)
def update(
    endpoint_id: str, body: WebhookEndpointUpdate, rt: RuntimeDep, _key: AdminKey
) -> WebhookEndpointPublic:
    changes = {k: getattr(body, k) for k in body.model_fields_set}
    for name in ("url", "events", "enabled"):
        if name in changes and changes[name] is None:
            del changes[name]  # null: leave it as it is
    return WebhookEndpointPublic(**endpoint_dict(update_endpoint(rt, endpoint_id, changes)))


@router.post(
    "/{endpoint_id}/rotate-secret",
    operation_id="rotateWebhookSecret",
    response_model=WebhookEndpointWithSecret,
    responses=errors(NotFound),
)
def rotate(endpoint_id: str, rt: RuntimeDep, _key: AdminKey) -> WebhookEndpointWithSecret:
    row, secret = rotate_secret(rt, endpoint_id)
    return WebhookEndpointWithSecret(**endpoint_dict(row), secret=secret)


@router.delete(
    "/{endpoint_id}",
    status_code=204,
    operation_id="deleteWebhookEndpoint",
    response_class=Response,
    responses={204: {"description": "deleted"}, **errors(NotFound)},
)
def delete(endpoint_id: str, rt: RuntimeDep, _key: AdminKey) -> Response:
    delete_endpoint(rt, endpoint_id)
    return Response(status_code=204)


@router.get(
    "/{endpoint_id}/deliveries",
    operation_id="listWebhookDeliveries",
    response_model=WebhookDeliveryPage,
    responses=errors(NotFound),
)
def deliveries(
    endpoint_id: str,
    rt: RuntimeDep,
    _key: AdminKey,
    limit: Limit = 50,
    cursor: Cursor = None,
    status: Annotated[str | None, Query(pattern="^(" + "|".join(DELIVERY_STATUSES) + ")$")] = None,
) -> WebhookDeliveryPage:
    items, nxt = list_deliveries(rt, endpoint_id, limit=limit, cursor=cursor, status=status)
    return WebhookDeliveryPage(
        deliveries=[WebhookDeliveryPublic(**i) for i in items], next_cursor=nxt
    )


@router.post(
    "/{endpoint_id}/test",
    status_code=202,
    operation_id="testWebhookEndpoint",
    response_model=WebhookDeliveryPublic,
    responses=errors(NotFound),
)
def test(endpoint_id: str, rt: RuntimeDep, _key: AdminKey) -> WebhookDeliveryPublic:
    """Queue a ``webhook.ping``; its outcome shows in the delivery log."""
    return WebhookDeliveryPublic(**delivery_dict(send_ping(rt, endpoint_id)))
