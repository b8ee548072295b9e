"""The delivery queue and outcomes at a glance (``broker transfers stats``)."""

from __future__ import annotations

from typing import Any

from sqlmodel import Session

from broker.core.statuses import FINAL_TRANSFER_STATUSES
from broker.runtime import Runtime
from broker.store.jobs import queue_stats
from broker.store.transfers import status_counts

__all__ = ["delivery_stats"]


def delivery_stats(rt: Runtime) -> dict[str, Any]:
    """Queue depth, leases and the oldest pending age, and transfers by status."""
    now = rt.clock()
    q = queue_stats(rt.engine, now=now)
    with Session(rt.engine) as session:
        by_status = status_counts(session)
    age = (now - q.oldest_pending).total_seconds() if q.oldest_pending else 0.0
    stats: dict[str, Any] = {
        "pending": q.pending,
        "due": q.due,
        "in_flight": q.in_flight,
        "lapsed_leases": q.lapsed,
        "oldest_pending_seconds": round(age, 3),
    }
    for status in FINAL_TRANSFER_STATUSES:
        stats[f"total_{status}"] = by_status.get(status, 0)
    return stats
