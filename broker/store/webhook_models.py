"""Tables of the webhooks to the host (migration 0012): endpoints and their deliveries.

``webhook_endpoints``: where the host wants to hear of which events. The signing
secret is sealed by the vault (bound to the endpoint's id); after a rotation the
previous secret stays, sealed, until ``previous_secret_expires_at`` (24 h), and
messages are signed with both meanwhile. ``failure_run`` counts the deliveries in a
row that failed for good; at ``BROKER_WEBHOOK_MAX_FAILURES`` the endpoint is disabled
(``enabled`` false, ``disabled_reason`` says why).

``webhook_deliveries``: one row per message and endpoint, the durable job (written
in the transaction of the audit entry that causes it). ``position`` orders the
messages of one connection (audit seq * 16 + the index of the webhook type derived
from that entry); the sender claims a delivery only when no earlier pending one of
the same endpoint and connection exists. ``lease_owner``/``lease_until``: the sender
holding it; a lease that ran out is taken over.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Column, ForeignKey, Index, Integer, String, Text
from sqlmodel import Field, SQLModel

from broker.store.types import UTCDateTime, utcnow

__all__ = ["WebhookDelivery", "WebhookEndpoint"]


class WebhookEndpoint(SQLModel, table=True):
    __tablename__ = "webhook_endpoints"

    id: str = Field(primary_key=True, max_length=40)
    url: str = Field(sa_type=Text)
    events: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    description: str | None = Field(default=None, max_length=500)
    secret: str = Field(sa_type=Text)  # sealed by the vault
    previous_secret: str | None = Field(default=None, sa_type=Text)  # sealed
    previous_secret_expires_at: datetime | None = Field(
        default=None, sa_type=UTCDateTime, nullable=True
    )
    enabled: bool = Field(default=True, index=True)
    disabled_reason: str | None = Field(default=None, sa_type=Text)
    failure_run: int = Field(default=0)
    created_at: datetime = Field(sa_type=UTCDateTime, default_factory=utcnow)
    updated_at: datetime = Field(sa_type=UTCDateTime, default_factory=utcnow)


class WebhookDelivery(SQLModel, table=True):
    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        Index("ix_webhook_deliveries_due", "status", "next_attempt_at"),
        Index("ix_webhook_deliveries_endpoint_created", "endpoint_id", "created_at"),
        Index("ix_webhook_deliveries_order", "endpoint_id", "connection_id", "status", "position"),
    )

    id: str = Field(primary_key=True, max_length=40)  # msg_…: the webhook-id header
    endpoint_id: str = Field(
        sa_column=Column(
            String(40), ForeignKey("webhook_endpoints.id", ondelete="CASCADE"), nullable=False
        )
    )
    event_type: str = Field(max_length=60)
    payload: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    connection_id: str | None = Field(default=None, max_length=40)
    position: int | None = Field(default=None, sa_type=BigInteger)
    occurred_at: datetime = Field(sa_type=UTCDateTime, default_factory=utcnow)
    status: str = Field(default="pending", max_length=20)  # pending | delivered | failed
    attempts: int = Field(default=0, sa_column=Column(Integer, nullable=False))
    next_attempt_at: datetime = Field(sa_type=UTCDateTime, default_factory=utcnow)
    lease_owner: str | None = Field(default=None, max_length=80)
    lease_until: datetime | None = Field(default=None, sa_type=UTCDateTime, nullable=True)
    last_status_code: int | None = None
    last_error: str | None = Field(default=None, sa_type=Text)
    created_at: datetime = Field(sa_type=UTCDateTime, default_factory=utcnow)
    completed_at: datetime | None = Field(default=None, sa_type=UTCDateTime, nullable=True)
