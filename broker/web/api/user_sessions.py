"""POST /v1/user-sessions: the host backend hands a user a link to their own page (/me)."""

from __future__ import annotations

from fastapi import APIRouter, Response
from pydantic import BaseModel, ConfigDict, Field

from broker.flows.browser_sessions import create_user_session
from broker.web.api.error_responses import errors
from broker.web.api.schemas import ConnectSessionIssued
from broker.web.deps import AdminKey, RuntimeDep

__all__ = ["UserSessionCreate", "router"]

router = APIRouter(prefix="/v1/user-sessions", tags=["connect"])


class UserSessionCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user_id: str = Field(min_length=1, max_length=200)


@router.post(
    "",
    status_code=201,
    operation_id="createUserSession",
    response_model=ConnectSessionIssued,
    responses=errors("invalid_input"),
)
def create(
    body: UserSessionCreate, rt: RuntimeDep, key: AdminKey, response: Response
) -> ConnectSessionIssued:
    """A one-time link to the user's own page (also in ``Location``)."""
    issued = create_user_session(rt, user_id=body.user_id, created_by=key.id)
    response.headers["Location"] = issued.url
    return ConnectSessionIssued(token=issued.token, url=issued.url, expires_at=issued.expires_at)
