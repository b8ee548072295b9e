"""Third parties' policy pages and terms (migration 0013).

* ``policy_snapshots``: one row per distinct SHA-256 of a page's normalised text
  (:mod:`broker.core.policy_text`), with the URL it was first fetched from, when, the
  HTTP status and the ``ETag``/``Last-Modified`` it came with;
* ``policy_checks``: every fetch of a connector's page, retrieved (``digest`` names the
  snapshot) or ``not retrieved`` (``digest`` is null, ``error`` says why);
* ``terms_versions``: every distinct set of a connector's terms
  (:mod:`broker.core.terms`), keyed by its version; ``current_since`` is when it last
  became the connector's current terms (the current one has the latest);
* ``policy_changes``: each change from one terms version to the next, with its
  classification (``significant``/``minor``), what changed, the connections it paused
  and the operator's reclassification if any. Each is also a ``policy.changed`` event.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Column, Index, Text
from sqlmodel import Field, SQLModel

from broker.store.types import UTCDateTime, utcnow

__all__ = ["NOT_RETRIEVED", "PolicyChange", "PolicyCheck", "PolicySnapshot", "TermsVersion"]

NOT_RETRIEVED = "not retrieved"


class PolicySnapshot(SQLModel, table=True):
    __tablename__ = "policy_snapshots"

    digest: str = Field(primary_key=True, max_length=64)
    url: str = Field(sa_type=Text)
    fetched_at: datetime = Field(sa_type=UTCDateTime, default_factory=utcnow)
    http_status: int
    etag: str | None = Field(default=None, max_length=200)
    last_modified: str | None = Field(default=None, max_length=100)
    content_type: str | None = Field(default=None, max_length=100)
    text: str = Field(sa_type=Text)


class PolicyCheck(SQLModel, table=True):
    __tablename__ = "policy_checks"
    __table_args__ = (Index("ix_policy_checks_page", "connector_id", "page", "checked_at"),)

    id: int | None = Field(default=None, primary_key=True)
    connector_id: str = Field(max_length=63)
    page: str = Field(max_length=20)  # privacy_policy | terms
    url: str = Field(sa_type=Text)
    checked_at: datetime = Field(sa_type=UTCDateTime, default_factory=utcnow)
    outcome: str = Field(max_length=20)  # retrieved | not retrieved
    http_status: int | None = None
    digest: str | None = Field(default=None, max_length=64)
    etag: str | None = Field(default=None, max_length=200)
    last_modified: str | None = Field(default=None, max_length=100)
    error: str | None = Field(default=None, sa_type=Text)


class TermsVersion(SQLModel, table=True):
    __tablename__ = "terms_versions"

    version: str = Field(primary_key=True, max_length=64)
    connector_id: str = Field(max_length=63, index=True)
    terms: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    recorded_at: datetime = Field(sa_type=UTCDateTime, default_factory=utcnow)
    current_since: datetime = Field(sa_type=UTCDateTime, default_factory=utcnow)


class PolicyChange(SQLModel, table=True):
    __tablename__ = "policy_changes"

    id: str = Field(primary_key=True, max_length=40)
    connector_id: str = Field(max_length=63, index=True)
    before_version: str = Field(max_length=64)
    after_version: str = Field(max_length=64)
    detected_at: datetime = Field(sa_type=UTCDateTime, default_factory=utcnow)
    detected_by: str = Field(max_length=200)  # load | check | the operator's actor
    classification: str = Field(max_length=20)  # significant | minor
    changes: list[dict[str, Any]] = Field(sa_column=Column(JSON, nullable=False))
    digests: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    # The connections a significant change paused (``reconsent_required``).
    paused: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    classified_by: str | None = Field(default=None, max_length=200)
    classified_at: datetime | None = Field(default=None, sa_type=UTCDateTime, nullable=True)
    classified_reason: str | None = Field(default=None, sa_type=Text)
