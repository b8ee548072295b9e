"""Tables of the verifiable log (migration 0003): Merkle tree nodes and signed checkpoints.

``merkle_nodes`` holds the hash of every *complete* subtree of the RFC 9162 tree over
the audit entries, keyed by its post-order position (``broker.core.merkle.node_position``,
so each append adds rows at the end of the index); rows are written by ``append_event``
in the same transaction as the entry and never change.
``checkpoints`` holds every signed checkpoint, with its signed note: the log's signature,
then (migration 0008) the witnesses' cosignatures once a quorum of them cosigned it
(``witnessed_time``: when the quorum-th did; null: not published yet).
``checkpoint_cosignatures`` holds every cosignature a configured witness returned.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Column, ForeignKey, Integer, LargeBinary, Text, UniqueConstraint
from sqlmodel import Field, SQLModel

from broker.store.types import UTCDateTime, utcnow

__all__ = ["CheckpointRow", "CosignatureRow", "MerkleNode"]


class MerkleNode(SQLModel, table=True):
    __tablename__ = "merkle_nodes"

    pos: int = Field(
        sa_type=BigInteger, primary_key=True, sa_column_kwargs={"autoincrement": False}
    )
    hash: bytes = Field(sa_column=Column(LargeBinary(32), nullable=False))


class CheckpointRow(SQLModel, table=True):
    __tablename__ = "checkpoints"

    id: int | None = Field(default=None, primary_key=True)
    tree_size: int = Field(sa_type=BigInteger, index=True)
    root_hash: str = Field(max_length=64)
    time: str = Field(max_length=40)
    origin: str = Field(max_length=255)
    key_id: str = Field(max_length=8)
    note: str = Field(sa_type=Text)
    created_at: datetime = Field(sa_type=UTCDateTime, default_factory=utcnow)
    witnessed_time: str | None = Field(default=None, max_length=40)


class CosignatureRow(SQLModel, table=True):
    __tablename__ = "checkpoint_cosignatures"
    __table_args__ = (UniqueConstraint("checkpoint_id", "key_id"),)

    id: int | None = Field(default=None, primary_key=True)
    checkpoint_id: int = Field(
        sa_column=Column(Integer, ForeignKey("checkpoints.id"), nullable=False, index=True)
    )
    witness: str = Field(max_length=255)
    key_id: str = Field(max_length=8)
    timestamp: int = Field(sa_type=BigInteger)
    line: str = Field(sa_type=Text)
    created_at: datetime = Field(sa_type=UTCDateTime, default_factory=utcnow)
