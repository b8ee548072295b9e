"""POST /v1/connect-sessions: the host backend hands a user a consent link."""

from __future__ import annotations

from fastapi import APIRouter

from broker.flows.connect import create_connect_session
from broker.web.api.schemas import ConnectSessionCreate, ConnectSessionIssued
from broker.web.deps import AdminKey, RuntimeDep

router = APIRouter(prefix="/v1/connect-sessions", tags=["connect"])


@router.post("", status_code=201, response_model=ConnectSessionIssued)
def create(body: ConnectSessionCreate, rt: RuntimeDep, key: AdminKey) -> ConnectSessionIssued:
    issued = create_connect_session(
        rt,
        user_id=body.user_id,
        connector_id=body.connector,
        return_url=body.return_url,
        created_by=key.id,
        settings=body.settings,
        display_name=body.display_name,
        confirm=body.confirm,
    )
    return ConnectSessionIssued(token=issued.token, url=issued.url, expires_at=issued.expires_at)
