"""A user's objections to uses of their data (GDPR Art. 21(2)-(3)), for the host backend."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body
from fastapi.encoders import jsonable_encoder

from broker.flows.connect import validate_user_id
from broker.flows.preferences import parse_preferences, read_preferences, set_objections
from broker.web.api.error_responses import errors
from broker.web.api.schemas_audit import Preferences, PreferencesUpdate
from broker.web.deps import AdminKey, AuditorKey, RuntimeDep
from broker.web.openapi import request_body

__all__ = ["router"]

router = APIRouter(prefix="/v1", tags=["preferences"])


@router.get(
    "/users/{user_id}/preferences",
    operation_id="getUserPreferences",
    response_model=Preferences,
    responses=errors("invalid_input"),
)
def user_preferences(user_id: str, rt: RuntimeDep, _key: AuditorKey) -> dict[str, Any]:
    """The uses the user objects to (``object_to``) and those they may object to here."""
    return jsonable_encoder(read_preferences(rt, validate_user_id(user_id)).to_dict())


@router.put(
    "/users/{user_id}/preferences",
    operation_id="setUserPreferences",
    response_model=Preferences,
    responses=errors("invalid_input"),
    openapi_extra=request_body(PreferencesUpdate, "the uses the user objects to"),
)
def put_user_preferences(
    user_id: str,
    rt: RuntimeDep,
    key: AdminKey,
    body: Annotated[Any, Body(include_in_schema=False)] = None,
) -> dict[str, Any]:
    """Replace the user's objections, e.g. ``{"object_to": ["marketing"]}`` (``[]``
    withdraws them all); each added or withdrawn use is an audit event."""
    validate_user_id(user_id)
    object_to = parse_preferences(rt, body)
    return jsonable_encoder(set_objections(rt, user_id, object_to, actor=key.id).to_dict())
