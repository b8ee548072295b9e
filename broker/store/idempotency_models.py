"""Stored answers of requests sent with an ``Idempotency-Key`` header (migration 0019).

One row per (principal, route, key): the SHA-256 of the request body it came with
and, once answered, the status, media type, ``Location`` and body of that answer, so
that a retry gets the same answer (replayed) instead of doing the work again. The
principal is the SHA-256 of the caller's credential (never the credential itself).
A row without ``status`` is a request still running."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Text, UniqueConstraint
from sqlmodel import Field, SQLModel

from broker.store.types import UTCDateTime, utcnow

__all__ = ["IdempotencyKey"]


class IdempotencyKey(SQLModel, table=True):
    __tablename__ = "idempotency_keys"
    __table_args__ = (
        UniqueConstraint("principal", "route", "key", name="uq_idempotency_keys_request"),
    )

    id: int | None = Field(default=None, primary_key=True)
    principal: str = Field(max_length=64)
    route: str = Field(max_length=600)  # method and path, e.g. "POST /v1/connect-sessions"
    key: str = Field(max_length=200)
    request_sha256: str = Field(max_length=64)
    status: int | None = None
    media_type: str | None = Field(default=None, max_length=200)
    location: str | None = Field(default=None, sa_type=Text)
    body: str | None = Field(default=None, sa_type=Text)
    created_at: datetime = Field(sa_type=UTCDateTime, default_factory=utcnow, index=True)
