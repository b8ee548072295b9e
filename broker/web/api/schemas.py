"""Request and response bodies of the /v1 API."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any, ClassVar, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

__all__ = [
    "OLD_NAME",
    "ConnectSessionCreate",
    "ConnectSessionIssued",
    "ConnectionPage",
    "ConnectionPublic",
    "ConsentPage",
    "ConsentPublic",
    "Revocation",
    "Transfer",
    "TransferAttempt",
    "TransferCreate",
    "TransferPage",
    "Utc",
]


def _utc(value: datetime) -> datetime:
    """Every time leaves in UTC (pydantic writes it RFC 3339 with ``Z``); a naive time
    (SQLite gives some back so) is UTC already."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


Utc = Annotated[datetime, AfterValidator(_utc)]

# A field kept under an old name: ``deprecated`` in the schema (pydantic's own
# ``deprecated=`` would also warn on every read of it by the broker itself).
OLD_NAME: dict[str, Any] = {"deprecated": True}


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


_ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?\+00:00$")


def _in_z(value: Any) -> Any:
    """Times in a value not declared by a model, as RFC 3339 UTC with ``Z`` too."""
    if isinstance(value, str):
        return value[:-6] + "Z" if _ISO_UTC.match(value) else value
    if isinstance(value, datetime):
        return _utc(value)
    if isinstance(value, dict):
        return {k: _in_z(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_in_z(v) for v in value]
    return value


class _Out(BaseModel):
    """A response body. Unknown fields pass through (times in them written with ``Z``
    too): answers may gain fields, and a client ignores those it does not know."""

    model_config = ConfigDict(extra="allow")

    # False: the body is served as it was recorded (an audit entry, as hashed)
    _times_in_z: ClassVar[bool] = True

    @model_validator(mode="after")
    def _extras_in_z(self) -> Any:
        if not self._times_in_z:
            return self
        extra = self.__pydantic_extra__
        if extra:
            for name, value in extra.items():
                extra[name] = _in_z(value)
        for name in type(self).model_fields:  # untyped parts: dict[str, Any] fields
            value = getattr(self, name)
            if isinstance(value, dict | list):
                setattr(self, name, _in_z(value))
        return self


class ConnectSessionCreate(_In):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "user_id": "user-1",
                    "connector_id": "acme-chat",
                    "return_url": "https://app.example.com/integrations/done",
                }
            ]
        }
    )

    user_id: str = Field(min_length=1, max_length=200)
    connector_id: str | None = Field(
        default=None, max_length=63, description="an installed connector's id"
    )
    connector: str | None = Field(
        default=None,
        max_length=63,
        json_schema_extra=OLD_NAME,
        description="old name of connector_id",
    )
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
    reconnect: bool = Field(
        default=True,
        description="re-authorise the user's live connection of this connector (same id, "
        "new tokens, new consent record) instead of making a second one",
    )
    tenant: str | None = Field(
        default=None,
        min_length=1,
        max_length=100,
        description="the host's customer whose OAuth app to use "
        "(POST /v1/connectors/{id}/credentials); absent: the broker's own",
    )

    @model_validator(mode="after")
    def _one_connector(self) -> ConnectSessionCreate:
        if self.connector and self.connector_id and self.connector != self.connector_id:
            raise ValueError("connector_id and its old name connector differ")
        self.connector_id = self.connector_id or self.connector
        return self


class ConnectSessionIssued(_Out):
    token: str
    url: str
    expires_at: Utc


class ConnectionPublic(_Out):
    id: str
    user_id: str
    connector_id: str
    connector: str = Field(json_schema_extra=OLD_NAME, description="old name of connector_id")
    status: str
    created_at: Utc
    activated_at: Utc | None
    revoked_at: Utc | None
    last_error: str | None
    consent_id: str | None
    tenant: str | None = Field(default=None, description="whose OAuth app it uses")
    granted_categories: list[str] = []
    declined_categories: list[str] = []

    @model_validator(mode="before")
    @classmethod
    def _both_names(cls, data: Any) -> Any:
        return _with_connector_id(data)


def _with_connector_id(data: Any) -> Any:
    """``connector_id``, and ``connector`` as its deprecated alias, from either."""
    if isinstance(data, dict) and ("connector" in data) != ("connector_id" in data):
        name = data.get("connector_id", data.get("connector"))
        data = {**data, "connector_id": name, "connector": name}
    return data


class ConnectionPage(_Out):
    connections: list[ConnectionPublic]
    next_cursor: str | None = Field(description="pass as cursor for the next page; null: last")


class ConsentPublic(_Out):
    id: str
    connection_id: str
    user_id: str
    connector_id: str
    connector: str = Field(json_schema_extra=OLD_NAME, description="old name of connector_id")
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
    consented_at: Utc
    recorded_at: Utc

    @model_validator(mode="before")
    @classmethod
    def _both_names(cls, data: Any) -> Any:
        return _with_connector_id(data)


class ConsentPage(_Out):
    consents: list[ConsentPublic]


class Revocation(_Out):
    connection: ConnectionPublic
    provider_revocation: dict[str, str] = Field(
        description="per token: revoked, or failed: <reason>; or a provider note"
    )
    already_revoked: bool


class TransferCreate(_In):
    """The body of ``POST /v1/connections/{id}/transfers``. The route reads it by hand
    (broker.core.gateway.TransferRequest.parse, the same rules): this model documents it."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "action": "post_message",
                    "mode": "drop",
                    "purpose": "Post work item updates to a channel",
                    "data": {"work_item": {"id": "W-42", "title": "Fix login"}},
                }
            ]
        }
    )

    action: str = Field(min_length=1, description="an action the connector declares")
    data: dict[str, Any] = Field(description="the payload; keys non-empty, without '.'")
    purpose: str | None = Field(
        default=None,
        min_length=1,
        max_length=500,
        description="must equal a purpose the connector declared for the categories sent",
    )
    mode: Literal["reject", "drop"] = Field(
        default="reject",
        description="reject: a field outside the grant refuses the transfer; drop: it is removed",
    )
    use: str | None = Field(
        default=None, description="a fideslang data-use key the transfer serves"
    )
    idempotency_key: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        json_schema_extra=OLD_NAME,
        description="old form of the Idempotency-Key header (both given: they must agree)",
    )


class TransferAttempt(_Out):
    n: int
    at: Utc
    request: str = Field(description="method, host and path")
    status: int | None = Field(default=None, description="the third party's HTTP status")
    error: str | None = None


class Transfer(_Out):
    id: str
    connection_id: str
    user_id: str
    connector_id: str
    connector: str = Field(json_schema_extra=OLD_NAME, description="old name of connector_id")
    action: str
    purpose: str | None
    legal_basis: str
    consent_id: str | None
    mode: Literal["reject", "drop"]
    status: Literal["pending", "delivered", "failed", "blocked", "outcome_unknown", "cancelled"]
    categories: list[str]
    field_paths: list[str]
    dropped: list[dict[str, Any]] = Field(description="fields removed in drop mode")
    payload_sha256: str | None
    payload_bytes: int | None
    destination: str | None
    idempotency_key: str | None
    attempts: list[TransferAttempt]
    response_status: int | None
    response_id: str | None
    reason: str | None
    actor: str | None
    created_at: Utc
    completed_at: Utc | None
    next_attempt_at: Utc | None
    runs: int
    terms_version: str | None
    data_uses: list[str] | None

    @model_validator(mode="before")
    @classmethod
    def _both_names(cls, data: Any) -> Any:
        return _with_connector_id(data)


class TransferPage(_Out):
    transfers: list[Transfer]
    next_cursor: str | None = Field(description="pass as cursor for the next page; null: last")
