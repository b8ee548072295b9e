"""POST /v1/connect-sessions: the host backend hands a user a consent link."""

from __future__ import annotations

from fastapi import APIRouter, Response

from broker.core.errors import NotFound, ReturnUrlNotAllowed
from broker.flows.connect import create_connect_session
from broker.web.api.error_responses import errors
from broker.web.api.schemas import ConnectSessionCreate, ConnectSessionIssued
from broker.web.deps import AdminKey, RuntimeDep

router = APIRouter(prefix="/v1/connect-sessions", tags=["connect"])


@router.post(
    "",
    status_code=201,
    operation_id="createConnectSession",
    response_model=ConnectSessionIssued,
    responses=errors(NotFound, ReturnUrlNotAllowed),
)
def create(
    body: ConnectSessionCreate, rt: RuntimeDep, key: AdminKey, response: Response
) -> ConnectSessionIssued:
    """A one-time consent link for the user's browser (also in ``Location``)."""
    issued = create_connect_session(
        rt,
        user_id=body.user_id,
        connector_id=body.connector_id,
        return_url=body.return_url,
        created_by=key.id,
        settings=body.settings,
        display_name=body.display_name,
        confirm=body.confirm,
        reconnect=body.reconnect,
        tenant=body.tenant,
    )
    response.headers["Location"] = issued.url
    return ConnectSessionIssued(token=issued.token, url=issued.url, expires_at=issued.expires_at)
