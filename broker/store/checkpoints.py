"""Queries of signed checkpoints (``checkpoints``) and their witnesses' cosignatures
(``checkpoint_cosignatures``). When a checkpoint is signed, and when it counts as
published, is decided in :mod:`broker.flows.checkpoints` and
:mod:`broker.flows.witnesses`; reading the tree is :mod:`broker.store.tree`.
"""

from __future__ import annotations

from sqlalchemy import func, update
from sqlmodel import Session, col, select

from broker.store.merkle_models import CheckpointRow, CosignatureRow

__all__ = [
    "cosignatures",
    "cosigned_sizes",
    "has_cosignature",
    "largest_signed_size",
    "latest_published",
    "publish_checkpoint",
]


def largest_signed_size(session: Session) -> int:
    """The tree size of the largest checkpoint signed; 0 before the first."""
    return session.exec(select(func.max(CheckpointRow.tree_size))).one() or 0


def cosigned_sizes(session: Session) -> dict[str, int]:
    """Per witness key id, the tree size of the largest checkpoint it cosigned."""
    rows = session.exec(
        select(CosignatureRow.key_id, func.max(CheckpointRow.tree_size))
        .join(CheckpointRow, col(CheckpointRow.id) == CosignatureRow.checkpoint_id)
        .group_by(CosignatureRow.key_id)
    ).all()
    return {kid: int(size) for kid, size in rows}


def has_cosignature(session: Session, *, checkpoint_id: int | None, key_id: str) -> bool:
    """Whether the witness key ``key_id`` has a stored cosignature of the checkpoint."""
    found = session.exec(
        select(CosignatureRow.id).where(
            CosignatureRow.checkpoint_id == checkpoint_id, CosignatureRow.key_id == key_id
        )
    ).first()
    return found is not None


def cosignatures(session: Session, *, checkpoint_id: int) -> list[CosignatureRow]:
    """The checkpoint's cosignatures, by witness name and then key id."""
    return list(
        session.exec(
            select(CosignatureRow)
            .where(CosignatureRow.checkpoint_id == checkpoint_id)
            .order_by(col(CosignatureRow.witness), col(CosignatureRow.key_id))
        ).all()
    )


def publish_checkpoint(
    session: Session, *, checkpoint_id: int | None, note: str, witnessed_time: str
) -> bool:
    """Set the checkpoint's ``note`` and ``witnessed_time`` if it has no
    ``witnessed_time`` yet (so of concurrent publications the first stays); whether
    this one did."""
    result = session.exec(
        update(CheckpointRow)
        .where(col(CheckpointRow.id) == checkpoint_id, col(CheckpointRow.witnessed_time).is_(None))
        .values(note=note, witnessed_time=witnessed_time)
    )
    return bool(result.rowcount == 1)


def latest_published(session: Session) -> CheckpointRow | None:
    """The checkpoint with the largest id among those with a ``witnessed_time``."""
    return session.exec(
        select(CheckpointRow)
        .where(col(CheckpointRow.witnessed_time).is_not(None))
        .order_by(col(CheckpointRow.id).desc())
        .limit(1)
    ).first()
