"""Tables. Secrets are stored as digests (API keys, session tokens, ``state``)
or as vault ciphertexts (OAuth tokens, PKCE verifiers); never in the clear."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, TypeVar, cast

from sqlalchemy import JSON, Column, Index, LargeBinary, Text, UniqueConstraint
from sqlalchemy.orm import instrumentation
from sqlmodel import Field, SQLModel

from broker.store.types import UTCDateTime, utcnow

__all__ = [
    "ApiKey",
    "AuditHead",
    "AuditRow",
    "BrowserSessionRecord",
    "ConnectSession",
    "Connection",
    "ConnectionToken",
    "ConsentRecord",
    "OAuthAttempt",
    "RateLimitCounter",
    "Transfer",
    "TransferCategory",
    "UserPreference",
    "from_row",
]

_M = TypeVar("_M", bound=SQLModel)


def _ts(**kw: Any) -> Any:
    nullable = kw.pop("nullable", False)
    return Field(sa_type=UTCDateTime, nullable=nullable, **kw)


class ApiKey(SQLModel, table=True):
    __tablename__ = "api_keys"

    id: str = Field(primary_key=True, max_length=40)
    key_hash: str = Field(max_length=64, unique=True)
    role: str = Field(max_length=20)
    label: str | None = Field(default=None, max_length=200)
    created_at: datetime = _ts(default_factory=utcnow)
    revoked_at: datetime | None = _ts(default=None, nullable=True)


class BrowserSessionRecord(SQLModel, table=True):
    """A signed-in browser of ``/me`` (``kind`` ``user``) or ``/audit`` (``auditor``).

    The cookie holds a random id; only its SHA-256 is here. ``ended_at`` is set by
    signing out, and for console sessions by revoking ``api_key_id``."""

    __tablename__ = "browser_sessions"

    id: str = Field(primary_key=True, max_length=40)
    token_hash: str = Field(max_length=64, unique=True)
    kind: str = Field(max_length=20)
    subject: str = Field(max_length=200)
    api_key_id: str | None = Field(default=None, max_length=40, index=True)
    created_at: datetime = _ts(default_factory=utcnow)
    expires_at: datetime = _ts(index=True)
    ended_at: datetime | None = _ts(default=None, nullable=True)


class RateLimitCounter(SQLModel, table=True):
    """One fixed-window counter of the ``limits`` storage over the database."""

    __tablename__ = "rate_limit_counters"

    key: str = Field(primary_key=True, max_length=255)
    count: int = 0
    expires_at: float = 0.0


class ConnectSession(SQLModel, table=True):
    """A short-lived, single-use ticket for one user's browser to one consent page.

    ``kind`` is ``connect`` (consent page) or ``user`` (the user's own pages).
    """

    __tablename__ = "connect_sessions"

    id: str = Field(primary_key=True, max_length=40)
    token_hash: str = Field(max_length=64, unique=True)
    kind: str = Field(default="connect", max_length=20)
    user_id: str = Field(max_length=200, index=True)
    connector_id: str | None = Field(default=None, max_length=63)
    return_url: str | None = Field(default=None, sa_type=Text)
    created_by: str | None = Field(default=None, max_length=40)
    created_at: datetime = _ts(default_factory=utcnow)
    expires_at: datetime = _ts()
    used_at: datetime | None = _ts(default=None, nullable=True)
    # How the consent page names the platform account (default: the user id).
    display_name: str | None = Field(default=None, max_length=200)
    # The connection waits in ``pending_confirmation`` until the host confirms it.
    confirm: bool = Field(default=False, sa_column_kwargs={"server_default": "0"})
    # Approving may re-authorise the user's live connection of this connector (the
    # same id) instead of making a second one; ``reconnect: false`` opts out (0017).
    reconnect: bool = Field(default=True, sa_column_kwargs={"server_default": "1"})
    # Whose OAuth client the connection uses (``connector_credentials``; 0018).
    tenant: str | None = Field(default=None, max_length=100)


class Connection(SQLModel, table=True):
    __tablename__ = "connections"

    id: str = Field(primary_key=True, max_length=40)
    user_id: str = Field(max_length=200, index=True)
    connector_id: str = Field(max_length=63, index=True)
    status: str = Field(max_length=30, index=True)
    created_at: datetime = _ts(default_factory=utcnow)
    updated_at: datetime = _ts(default_factory=utcnow)
    activated_at: datetime | None = _ts(default=None, nullable=True)
    revoked_at: datetime | None = _ts(default=None, nullable=True)
    last_error: str | None = Field(default=None, sa_type=Text)
    consent_id: str | None = Field(default=None, max_length=40)
    settings: dict[str, str] | None = Field(default=None, sa_column=Column(JSON))
    # ``pending_confirmation`` only: the host must confirm before this, or it is revoked.
    confirm_by: datetime | None = _ts(default=None, nullable=True)
    # The tenant whose OAuth client authorised it, refreshes and revokes it; None: the
    # manifest's environment references (``connector_credentials``; migration 0018).
    tenant: str | None = Field(default=None, max_length=100)


class ConnectionToken(SQLModel, table=True):
    """The connection's OAuth tokens, sealed by the vault; one row per connection.

    The row is also the lock for token refresh (``SELECT … FOR UPDATE``)."""

    __tablename__ = "connection_tokens"

    connection_id: str = Field(primary_key=True, foreign_key="connections.id", max_length=40)
    key_id: str = Field(max_length=20)
    access_token: str = Field(sa_type=Text)
    refresh_token: str | None = Field(default=None, sa_type=Text)
    expires_at: datetime | None = _ts(default=None, nullable=True)
    scope: str | None = Field(default=None, sa_type=Text)
    updated_at: datetime = _ts(default_factory=utcnow)


class OAuthAttempt(SQLModel, table=True):
    """One approved consent waiting for the provider's callback.

    Holds the consent as shown and chosen, so the record written at the
    callback is exactly what the user saw; ``state`` is stored as a digest
    and is single-use (``used_at``). ``browser_hash`` is the digest of the nonce
    in the approving browser's cookie (RFC 9700 §4.7); the sealed PKCE verifier
    is deleted once the attempt is spent."""

    __tablename__ = "oauth_attempts"

    id: str = Field(primary_key=True, max_length=40)
    state_hash: str = Field(max_length=64, unique=True)
    connection_id: str = Field(foreign_key="connections.id", max_length=40)
    session_id: str = Field(foreign_key="connect_sessions.id", max_length=40)
    code_verifier: str | None = Field(default=None, sa_type=Text)
    redirect_uri: str = Field(sa_type=Text)
    browser_hash: str | None = Field(default=None, max_length=64)
    consent: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    created_at: datetime = _ts(default_factory=utcnow)
    expires_at: datetime = _ts()
    used_at: datetime | None = _ts(default=None, nullable=True)


class ConsentRecord(SQLModel, table=True):
    """Immutable: inserted once, never updated (the store has no update path)."""

    __tablename__ = "consent_records"
    # A recipient's latest consent (its name and links in reports), one lookup: 0016.
    __table_args__ = (
        Index("ix_consent_records_connector_recorded", "connector_id", "recorded_at"),
    )
    id: str = Field(primary_key=True, max_length=40)
    connection_id: str = Field(foreign_key="connections.id", max_length=40, index=True)
    user_id: str = Field(max_length=200, index=True)
    connector_id: str = Field(max_length=63)
    connector_name: str = Field(max_length=120)
    granted_categories: list[str] = Field(sa_column=Column(JSON, nullable=False))
    declined_categories: list[str] = Field(sa_column=Column(JSON, nullable=False))
    purposes: dict[str, str] = Field(sa_column=Column(JSON, nullable=False))
    privacy_policy_url: str = Field(sa_type=Text)
    terms_url: str = Field(sa_type=Text)
    policy_digests: dict[str, str] | None = Field(default=None, sa_column=Column(JSON))
    manifest_digest: str = Field(max_length=64)
    platform_policy_version: str = Field(max_length=50)
    # The connector's terms version agreed to (broker.core.terms; migration 0013).
    terms_version: str | None = Field(default=None, max_length=64)
    scopes: list[str] = Field(sa_column=Column(JSON, nullable=False))
    client_ip: str | None = Field(default=None, max_length=64)
    user_agent: str | None = Field(default=None, sa_type=Text)
    consented_at: datetime = _ts()
    recorded_at: datetime = _ts(default_factory=utcnow)


class Transfer(SQLModel, table=True):
    """One delivery (or refused attempt) of data to a third party.

    Written ``pending`` and committed before the first byte leaves; the
    outcome is written after, once (a conditional update). The payload is kept
    only while the transfer is pending, sealed by the vault, for the worker that
    delivers it; its SHA-256 is kept for good."""

    __tablename__ = "transfers"
    __table_args__ = (
        UniqueConstraint("connection_id", "idempotency_key"),
        # Filters read their matches in page order (newest first): migration 0007.
        Index("ix_transfers_user_page", "user_id", "created_at", "id"),
        Index("ix_transfers_connector_status_page", "connector_id", "status", "created_at", "id"),
        Index("ix_transfers_status_page", "status", "created_at", "id"),
        Index("ix_transfers_connector_page", "connector_id", "created_at", "id"),  # 0020
    )

    id: str = Field(primary_key=True, max_length=40)
    connection_id: str = Field(foreign_key="connections.id", max_length=40, index=True)
    user_id: str = Field(max_length=200, index=True)
    connector_id: str = Field(max_length=63, index=True)
    action: str = Field(max_length=63)
    purpose: str | None = Field(default=None, sa_type=Text)
    legal_basis: str = Field(default="consent", max_length=40)
    consent_id: str | None = Field(default=None, max_length=40)
    mode: str = Field(default="reject", max_length=10)
    status: str = Field(max_length=20, index=True)
    categories: list[str] = Field(sa_column=Column(JSON, nullable=False))
    field_paths: list[str] = Field(sa_column=Column(JSON, nullable=False))
    dropped: list[dict[str, Any]] = Field(sa_column=Column(JSON, nullable=False))
    payload_sha256: str | None = Field(default=None, max_length=64)
    payload_bytes: int | None = None
    destination: str | None = Field(default=None, sa_type=Text)
    idempotency_key: str | None = Field(default=None, max_length=200)
    attempts: list[dict[str, Any]] = Field(sa_column=Column(JSON, nullable=False))
    response_status: int | None = None
    response_id: str | None = Field(default=None, max_length=200)
    reason: str | None = Field(default=None, sa_type=Text)
    actor: str | None = Field(default=None, max_length=200)
    created_at: datetime = _ts(default_factory=utcnow, index=True)
    completed_at: datetime | None = _ts(default=None, nullable=True)
    # The job (broker.store.jobs): schedule, lease, runs so far, and the granted
    # payload sealed by the vault while the transfer is pending (erased at the end).
    next_attempt_at: datetime | None = _ts(default=None, nullable=True)
    lease_owner: str | None = Field(default=None, max_length=64)
    lease_until: datetime | None = _ts(default=None, nullable=True)
    runs: int = Field(default=0, sa_column_kwargs={"server_default": "0"})
    payload_sealed: str | None = Field(default=None, sa_type=Text, repr=False)
    # The connector's terms version it was sent under (broker.core.terms; migration 0013).
    terms_version: str | None = Field(default=None, max_length=64)
    # The data uses the manifest declared for the categories sent, as the gateway saw
    # them (reports read these, not today's manifest; migration 0014). None: before 0014.
    data_uses: list[str] | None = Field(default=None, sa_column=Column(JSON))
    # The random salt of ``payload_sha256`` (HMAC-SHA256(salt, payload), log format 2;
    # broker.core.pseudonyms), never in the log; deleted on erasure (migration 0015).
    payload_salt: bytes | None = Field(default=None, sa_type=LargeBinary(32), repr=False)


class TransferCategory(SQLModel, table=True):
    """Index of which categories each transfer carried (filters and reports)."""

    __tablename__ = "transfer_categories"
    # The category filter reads its matches in page order (newest first): migration 0014.
    __table_args__ = (
        Index("ix_transfer_categories_page", "category", "created_at", "transfer_id"),
    )

    transfer_id: str = Field(foreign_key="transfers.id", primary_key=True, max_length=40)
    category: str = Field(primary_key=True, max_length=100, index=True)
    #: the transfer's ``created_at``, copied so a category's page is read in index order
    created_at: datetime | None = _ts(default=None, nullable=True)


class UserPreference(SQLModel, table=True):
    """A user's standing choices; one row per user, read by user id before each transfer.

    ``object_to``: the data-use keys the user objects to (GDPR Art. 21(2)-(3)); a key
    covers every key below it. Each change is a ``preference.*`` audit event."""

    __tablename__ = "user_preferences"

    user_id: str = Field(primary_key=True, max_length=200)
    object_to: list[str] = Field(sa_column=Column(JSON, nullable=False))
    updated_at: datetime = _ts(default_factory=utcnow)


class AuditRow(SQLModel, table=True):
    """One entry of the hash-chained audit log; append-only (never updated)."""

    __tablename__ = "audit_log"
    # A transfer's entries (the console's transfer page): migration 0020.
    __table_args__ = (Index("ix_audit_log_transfer", "transfer_id", "seq"),)

    seq: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    time: str = Field(max_length=40)
    event: str = Field(max_length=40, index=True)
    actor: str | None = Field(default=None, max_length=200)
    user_id: str | None = Field(default=None, max_length=200, index=True)
    connector_id: str | None = Field(default=None, max_length=63)
    connection_id: str | None = Field(default=None, max_length=40)
    transfer_id: str | None = Field(default=None, max_length=40)
    consent_id: str | None = Field(default=None, max_length=40)
    categories: list[str] = Field(sa_column=Column(JSON, nullable=False))
    field_paths: list[str] = Field(sa_column=Column(JSON, nullable=False))
    purpose: str | None = Field(default=None, sa_type=Text)
    legal_basis: str | None = Field(default=None, max_length=40)
    payload_sha256: str | None = Field(default=None, max_length=64)
    payload_bytes: int | None = None
    destination: str | None = Field(default=None, sa_type=Text)
    outcome: str | None = Field(default=None, max_length=40)
    details: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    prev_hash: str = Field(max_length=64)
    hash: str = Field(max_length=64)


class AuditHead(SQLModel, table=True):
    """The chain head, one row. Appends lock it first (``FOR UPDATE`` on
    PostgreSQL, the write lock on SQLite), so appends are serialised across
    processes and the chain cannot fork."""

    __tablename__ = "audit_head"

    id: int = Field(default=1, primary_key=True, sa_column_kwargs={"autoincrement": False})
    seq: int = 0
    hash: str = Field(max_length=64)


def from_row(model: type[_M], values: Mapping[Any, Any]) -> _M:
    """A detached ``model`` object from a row as stored (every column, already typed
    by the driver): no validation, about a sixth of what ``model(**row)`` costs (the
    transfer hot path builds three per transfer). Read it; do not add it to a session."""
    # SQLModel's stubs type model_construct as returning SQLModel; it returns a ``model``
    obj = cast(_M, model.model_construct(**values))
    instrumentation.manager_of_class(model)._new_state_if_none(obj)  # attribute reads need it
    return obj
