"""Verifications of the audit log (migration 0010): every run, and where it got to.

One row per run of ``broker.flows.integrity`` (``kind``: ``full`` re-verifies every
entry; ``incremental`` only those after the last verified position). A run that
succeeded records the position it verified up to (``to_seq``, ``chain_hash``: the hash
of that entry, ``frontier``: the Merkle tree's right edge over entries 1..to_seq as hex,
``checkpoint_size``: the largest signed checkpoint at or before it), from which the next
incremental run continues. ``status`` is ``running`` (``done``/``total``: its progress),
then ``done``; a run whose process died stays ``running`` until a newer run starts
(it is then marked ``interrupted``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Column, Text
from sqlmodel import Field, SQLModel

from broker.store.types import UTCDateTime, utcnow

__all__ = ["AuditVerification"]


class AuditVerification(SQLModel, table=True):
    __tablename__ = "audit_verifications"

    id: int | None = Field(default=None, primary_key=True)
    kind: str = Field(max_length=20)  # full | incremental
    status: str = Field(max_length=20, index=True)  # running | done | interrupted
    actor: str | None = Field(default=None, max_length=200)
    started_at: datetime = Field(sa_type=UTCDateTime, default_factory=utcnow)
    finished_at: datetime | None = Field(default=None, sa_type=UTCDateTime, nullable=True)
    from_seq: int = Field(default=0, sa_type=BigInteger)
    done: int = Field(default=0, sa_type=BigInteger)
    total: int = Field(default=0, sa_type=BigInteger)
    ok: bool | None = None
    checked: int | None = Field(default=None, sa_type=BigInteger)
    problem: str | None = Field(default=None, max_length=40)
    first_bad_seq: int | None = Field(default=None, sa_type=BigInteger)
    message: str | None = Field(default=None, sa_type=Text)
    to_seq: int | None = Field(default=None, sa_type=BigInteger)
    chain_hash: str | None = Field(default=None, max_length=64)
    frontier: list[Any] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    checkpoint_size: int | None = Field(default=None, sa_type=BigInteger)
    duration_ms: int | None = Field(default=None, sa_type=BigInteger)
