"""Per-tenant OAuth client credentials of a connector (admin): register, list, delete.
The client secret goes in and never comes out (broker.flows.tenant_credentials)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Response
from pydantic import BaseModel, ConfigDict, Field

from broker.core.errors import Conflict, InvalidInput, NotFound
from broker.flows.tenant_credentials import (
    credential_dict,
    delete_credentials,
    list_credentials,
    register_credentials,
)
from broker.web.api.error_responses import errors
from broker.web.api.paging import Cursor
from broker.web.api.schemas import Utc, _In
from broker.web.deps import AdminKey, RuntimeDep

__all__ = ["router"]

router = APIRouter(prefix="/v1/connectors/{connector_id}/credentials", tags=["connectors"])

_TENANT_HELP = "the host's customer: 1-100 of letters, digits and . _ : -"


class TenantCredentialsCreate(_In):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"tenant": "customer-42", "client_id": "abc123", "client_secret": "s3cr3t"}
            ]
        }
    )

    tenant: str = Field(min_length=1, max_length=100, description=_TENANT_HELP)
    client_id: str = Field(min_length=1, max_length=500)
    client_secret: str = Field(
        min_length=1, max_length=2000, description="stored sealed by the vault; never returned"
    )


class TenantCredentialsPublic(BaseModel):
    id: str
    connector_id: str
    tenant: str
    client_id: str
    created_at: Utc
    updated_at: Utc


class TenantCredentialsPage(BaseModel):
    credentials: list[TenantCredentialsPublic]
    next_cursor: str | None = Field(description="pass as cursor for the next page; null: last")


ConnectorId = Annotated[str, Path(max_length=63)]


@router.post(
    "",
    status_code=201,
    operation_id="registerTenantCredentials",
    response_model=TenantCredentialsPublic,
    responses={
        200: {"description": "the tenant's credentials were replaced"},
        **errors(NotFound, InvalidInput),
    },
)
def register(
    connector_id: ConnectorId,
    body: TenantCredentialsCreate,
    rt: RuntimeDep,
    _key: AdminKey,
    response: Response,
) -> TenantCredentialsPublic:
    """Register ``tenant``'s OAuth app for this connector (201), or replace the one it
    has (200). A connect session naming the tenant then uses it."""
    row, created = register_credentials(
        rt,
        connector_id,
        tenant=body.tenant,
        client_id=body.client_id,
        client_secret=body.client_secret,
    )
    location = f"/v1/connectors/{row.connector_id}/credentials/{row.tenant}"
    if created:
        response.headers["Location"] = location
    else:
        response.status_code = 200
    return TenantCredentialsPublic(**credential_dict(row))


@router.get(
    "",
    operation_id="listTenantCredentials",
    response_model=TenantCredentialsPage,
    responses=errors(NotFound, InvalidInput),
)
def list_all(
    connector_id: ConnectorId,
    rt: RuntimeDep,
    _key: AdminKey,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Cursor = None,
) -> TenantCredentialsPage:
    """The tenants with credentials for this connector, newest first; no secret."""
    items, nxt = list_credentials(rt, connector_id, limit=limit, cursor=cursor)
    return TenantCredentialsPage(
        credentials=[TenantCredentialsPublic(**i) for i in items], next_cursor=nxt
    )


@router.delete(
    "/{tenant}",
    status_code=204,
    operation_id="deleteTenantCredentials",
    response_class=Response,
    responses={204: {"description": "deleted"}, **errors(NotFound, Conflict)},
)
def delete(
    connector_id: ConnectorId,
    tenant: Annotated[str, Path(max_length=100)],
    rt: RuntimeDep,
    _key: AdminKey,
) -> Response:
    """Forget the tenant's credentials; refused (409) while connections use them."""
    delete_credentials(rt, connector_id, tenant)
    return Response(status_code=204)
