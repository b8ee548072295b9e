"""Request and response bodies of the /v1 API."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["ConnectSessionCreate", "ConnectSessionIssued", "ConnectionPublic", "ConsentPublic"]


def _no_nul(value: Any) -> None:
    if isinstance(value, str) and "\x00" in value:
        raise ValueError("contains the character U+0000, which is not accepted")
    if isinstance(value, dict):
        for key, item in value.items():
            _no_nul(key)
            _no_nul(item)


class _In(BaseModel):
    """A request body: no unknown fields, and no U+0000 in any string (PostgreSQL's text
    columns refuse it, so it would fail in the driver rather than as a 422)."""

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _refuse_nul(cls, data: Any) -> Any:
        _no_nul(data)
        return data


class ConnectSessionCreate(_In):
    user_id: str = Field(min_length=1, max_length=200)
    connector: str | None = Field(default=None, max_length=63)
    return_url: str | None = Field(default=None, max_length=2000)
    settings: dict[str, str] | None = Field(
        default=None,
        max_length=20,
        description="the connector's per-connection settings (its manifest's [[settings]])",
    )
    display_name: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        description="how the consent page names the platform account (default: user_id)",
    )
    confirm: bool = Field(
        default=False,
        description="the connection waits in pending_confirmation until "
        "POST /v1/connections/{id}/confirm",
    )


class ConnectSessionIssued(BaseModel):
    token: str
    url: str
    expires_at: datetime


class ConnectionPublic(BaseModel):
    id: str
    user_id: str
    connector: str
    status: str
    created_at: datetime
    activated_at: datetime | None
    revoked_at: datetime | None
    last_error: str | None
    consent_id: str | None
    granted_categories: list[str] = []
    declined_categories: list[str] = []


class ConsentPublic(BaseModel):
    id: str
    connection_id: str
    user_id: str
    connector: str
    connector_name: str
    granted_categories: list[str]
    declined_categories: list[str]
    purposes: dict[str, str]
    privacy_policy_url: str
    terms_url: str
    policy_digests: dict[str, str] | None
    manifest_digest: str
    platform_policy_version: str
    scopes: list[str]
    client_ip: str | None
    user_agent: str | None
    consented_at: datetime
    recorded_at: datetime
