"""``GET /v1/users/{id}/notices``: what the host should tell a user about changed terms.

Each notice is one of the user's connections whose connector's terms changed after the
user agreed (:mod:`broker.flows.notices`): ``reconsent_required`` ones ask for action
(sharing is paused until the user agrees again on ``/me`` or disconnects); the others
list minor changes of the last 30 days, for information.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter
from pydantic import BaseModel, Field

from broker.flows.connect import validate_user_id
from broker.flows.notices import pending_notices
from broker.web.api.schemas import Utc
from broker.web.deps import AdminKey, RuntimeDep

__all__ = ["NoticeList", "router"]

router = APIRouter(prefix="/v1", tags=["notices"])


class NoticeChangePublic(BaseModel):
    change_id: str
    classification: Literal["significant", "minor"]
    detected_at: Utc
    changes: list[dict[str, Any]] = Field(
        description="each difference: code, significant, subject (if any), text in plain words"
    )
    pages_changed: list[str] = Field(description="pages whose text changed: privacy_policy, terms")


class NoticePublic(BaseModel):
    kind: Literal["reconsent_required", "terms_changed"]
    action_required: bool
    connection_id: str
    connector_id: str
    connector_name: str
    consented_at: Utc | None
    since: Utc | None = Field(description="when the first change listed was detected")
    summary: list[str] = Field(description="what changed, in plain words, once each")
    changes: list[NoticeChangePublic]


class NoticeList(BaseModel):
    user_id: str
    data: list[NoticePublic]


@router.get("/users/{user_id}/notices", operation_id="listUserNotices", response_model=NoticeList)
def user_notices(user_id: str, rt: RuntimeDep, _key: AdminKey) -> NoticeList:
    """The user's pending notices about changed terms, those asking for action first."""
    validate_user_id(user_id)
    notices = [NoticePublic.model_validate(n.to_dict()) for n in pending_notices(rt, user_id)]
    return NoticeList(user_id=user_id, data=notices)
