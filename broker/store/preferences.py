"""Queries behind a user's objections (``user_preferences`` is read by primary key in
:mod:`broker.flows.preferences`): the user's queued transfers an objection may cancel.
Which of them it covers is decided in the flow."""

from __future__ import annotations

from sqlalchemy import select
from sqlmodel import Session, col

from broker.core.statuses import TransferStatus
from broker.store.models import Transfer

__all__ = ["queued_transfers"]


def queued_transfers(session: Session, *, user_id: str) -> list[tuple[str, str, list[str]]]:
    """``(id, connector_id, categories)`` of the user's pending transfers that no worker
    holds (no lease owner)."""
    rows = session.exec(  # type: ignore[call-overload]  # a Core select: rows
        select(col(Transfer.id), col(Transfer.connector_id), col(Transfer.categories)).where(
            col(Transfer.user_id) == user_id,
            col(Transfer.status) == TransferStatus.PENDING,
            col(Transfer.lease_owner).is_(None),
        )
    ).all()
    return [
        (transfer_id, connector_id, categories) for transfer_id, connector_id, categories in rows
    ]
