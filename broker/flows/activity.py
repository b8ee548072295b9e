"""What went where, read for people: a user's connections with their transfer counts
and history, and the auditor's transfers per recipient per day."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlmodel import Session

from broker.core.errors import InvalidInput, NotFound
from broker.core.statuses import TransferStatus
from broker.flows.paging import page
from broker.flows.summaries import daily_counts
from broker.runtime import Runtime
from broker.store.models import Connection, ConsentRecord
from broker.store.transfers import activity_counts, matching_query

__all__ = [
    "ConnectionActivity",
    "DailySeries",
    "connection_activity",
    "connection_history",
    "daily_transfers",
    "owned_connection",
]


@dataclass
class ConnectionActivity:
    """Counts of a connection's transfers by outcome, and when the latest were."""

    counts: dict[str, int] = field(default_factory=dict)
    last_at: datetime | None = None
    last_delivered_at: datetime | None = None

    @property
    def delivered(self) -> int:
        return self.counts.get(TransferStatus.DELIVERED, 0)

    @property
    def total(self) -> int:
        return sum(self.counts.values())


@dataclass(frozen=True)
class DailySeries:
    """``counts[connector][i]`` transfers on ``days[i]`` (UTC)."""

    days: list[date]
    counts: dict[str, list[int]]

    @property
    def day_totals(self) -> list[int]:
        return [sum(c[i] for c in self.counts.values()) for i in range(len(self.days))]

    @property
    def total(self) -> int:
        return sum(self.day_totals)

    @property
    def busy_days(self) -> list[tuple[date, list[int]]]:
        """Days with any transfer, each with its counts in ``counts``' order."""
        return [
            (day, [c[i] for c in self.counts.values()])
            for i, day in enumerate(self.days)
            if any(c[i] for c in self.counts.values())
        ]


def owned_connection(
    rt: Runtime, *, user_id: str, connection_id: str
) -> tuple[Connection, ConsentRecord | None]:
    """The user's own connection; another user's is reported as absent, not forbidden."""
    with Session(rt.engine) as session:
        conn = session.get(Connection, connection_id)
        if conn is None or conn.user_id != user_id:
            raise NotFound(
                f"you have no connection {connection_id!r}",
                details={"connection_id": connection_id},
            )
        consent = session.get(ConsentRecord, conn.consent_id) if conn.consent_id else None
    return conn, consent


def connection_activity(rt: Runtime, connection_ids: list[str]) -> dict[str, ConnectionActivity]:
    out = {cid: ConnectionActivity() for cid in connection_ids}
    if not connection_ids:
        return out
    with Session(rt.engine) as session:
        rows = activity_counts(session, connection_ids=connection_ids)
    for connection_id, status, n, last in rows:
        act = out[connection_id]
        act.counts[status] = n
        if act.last_at is None or last > act.last_at:
            act.last_at = last
        if status == TransferStatus.DELIVERED:
            act.last_delivered_at = last
    return out


def connection_history(
    rt: Runtime, connection_id: str, *, cursor: str | None = None, limit: int = 20
) -> tuple[list[dict[str, Any]], str | None]:
    """One connection's transfers, newest first; ``next_cursor`` is None on the last page."""
    if not 1 <= limit <= 200:
        raise InvalidInput("limit must be between 1 and 200", details={"field": "limit"})
    return page(rt.engine, matching_query(connection_id=connection_id), cursor=cursor, limit=limit)


def daily_transfers(
    rt: Runtime, *, days: int, status: str = TransferStatus.DELIVERED, until: date | None = None
) -> DailySeries:
    """Final transfers of ``status`` per recipient per UTC day over the ``days`` days
    ending ``until`` (today), from the recipient summary's ``day`` rows."""
    if not 1 <= days <= 366:
        raise InvalidInput("days must be between 1 and 366", details={"field": "days"})
    last = until or rt.clock().astimezone(UTC).date()
    first = last - timedelta(days=days - 1)
    axis = [first + timedelta(days=i) for i in range(days)]
    counts: dict[str, list[int]] = {}
    with rt.engine.connect() as conn:
        for connector_id, day, n in daily_counts(conn, status=status, first=first, last=last):
            counts.setdefault(connector_id, [0] * days)[(day - first).days] += n
    return DailySeries(days=axis, counts=dict(sorted(counts.items())))
