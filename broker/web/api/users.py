"""Erasure of a user (GDPR Art. 17), for the host backend: ``DELETE /v1/users/{id}``."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict

from broker.flows.erasure import erase_user
from broker.web.api.error_responses import errors
from broker.web.deps import AdminKey, RuntimeDep

__all__ = ["Erasure", "router"]

router = APIRouter(prefix="/v1", tags=["users"])


class Erasure(BaseModel):
    """What an erasure did. ``status`` ``nothing_held``: nothing to erase (the user was
    never known, or is erased already); nothing changed."""

    model_config = ConfigDict(extra="ignore")

    user_id: str
    status: str
    message: str
    pseudonym: str | None = None
    revoked: list[str] = []
    counts: dict[str, int] = {}
    audit_seq: int | None = None


@router.delete(
    "/users/{user_id}",
    operation_id="eraseUser",
    response_model=Erasure,
    responses=errors("invalid_input"),
)
def delete_user(user_id: str, rt: RuntimeDep, key: AdminKey) -> dict[str, Any]:
    """Erase the user: revoke their connections at the providers, delete their tokens,
    consent details, salts and objections, destroy their subject key and log
    ``subject.erased``. The log still verifies and counts per recipient stay; nothing
    left links to the person. Idempotent: again, ``status`` is ``nothing_held``."""
    return erase_user(rt, user_id, actor=key.id)
