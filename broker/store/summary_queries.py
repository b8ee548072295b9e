"""Reading the recipient summary (:mod:`broker.store.summaries`) and what it counts:
the stored rows, the figures reports show, the per-day counts of the charts, the
final transfers grouped for a recount, and replacing every row by a recount."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import date, datetime
from typing import Any

from sqlalchemy import Connection, Text, cast, delete, func, insert, select

from broker.core.statuses import (
    DISCLOSED_TRANSFER_STATUSES,
    FINAL_TRANSFER_STATUSES,
    TransferStatus,
)
from broker.store.models import Transfer
from broker.store.summaries import RecipientSummary, Shapes, Tally

__all__ = ["daily_counts", "final_shapes", "read_summary", "recipient_figures", "replace_summary"]

Progress = Callable[[int, int], None]

_S = RecipientSummary.__table__  # type: ignore[attr-defined]
_T = Transfer.__table__  # type: ignore[attr-defined]
_FINAL = select(
    _T.c.connector_id,
    _T.c.status,
    cast(_T.c.categories, Text),
    cast(_T.c.field_paths, Text),
    _T.c.created_at,
).where(_T.c.status.in_(FINAL_TRANSFER_STATUSES))
_ROWS = select(
    _S.c.connector_id, _S.c.status, _S.c.kind, _S.c.item, _S.c.transfers, _S.c.first_at,
    _S.c.last_at,
)  # fmt: skip
_PER_STATUS = select(
    _S.c.connector_id, _S.c.status, _S.c.transfers, _S.c.first_at, _S.c.last_at
).where(_S.c.kind == "transfer")
_DISCLOSED_ITEMS = (  # no times: only the sets are shown
    select(_S.c.connector_id, _S.c.kind, _S.c.item)
    .where(
        _S.c.kind.in_(("category", "field")),
        _S.c.status.in_(DISCLOSED_TRANSFER_STATUSES),
    )
    .distinct()
)
_PENDING = (
    select(_T.c.connector_id, func.count())
    .where(_T.c.status == TransferStatus.PENDING)
    .group_by(_T.c.connector_id)
)


def read_summary(conn: Connection, *, kinds: tuple[str, ...] | None = None) -> Tally:
    """The stored summary (optionally only rows of ``kinds``), keyed as :func:`tally`."""
    stmt = _ROWS if kinds is None else _ROWS.where(_S.c.kind.in_(kinds))
    return {(c, s, k, i): [n, first, last] for c, s, k, i, n, first, last in conn.execute(stmt)}


def recipient_figures(
    conn: Connection,
) -> tuple[
    list[tuple[str, int, datetime, datetime]],
    dict[str, tuple[set[str], set[str]]],
    dict[str, dict[str, int]],
]:
    """What the recipients report counts, from the summary: per recipient its delivered
    transfers (count, first, last), the categories and field paths it was sent (delivered
    or ``outcome_unknown``: a possible disclosure), and its other transfers by status
    (``pending`` from the transfers, by the status index)."""
    totals = []
    counts: dict[str, dict[str, int]] = {}
    for connector_id, status, n, first, last in conn.execute(_PER_STATUS):
        if status == TransferStatus.DELIVERED:
            totals.append((connector_id, n, first, last))
        else:
            counts.setdefault(connector_id, {})[status] = n
    received: dict[str, tuple[set[str], set[str]]] = {}
    for connector_id, kind, item in conn.execute(_DISCLOSED_ITEMS):
        cats, fields = received.setdefault(connector_id, (set(), set()))
        (cats if kind == "category" else fields).add(item)
    for connector_id, n in conn.execute(_PENDING):
        counts.setdefault(connector_id, {})["pending"] = n
    return totals, received, counts


def daily_counts(
    conn: Connection, *, status: str, first: date, last: date
) -> list[tuple[str, date, int]]:
    """Final transfers of ``status`` per recipient per UTC day from ``first`` to ``last``,
    from the summary's ``day`` rows (a few rows per recipient, whatever the log's size)."""
    rows = conn.execute(
        select(_S.c.connector_id, _S.c.item, _S.c.transfers).where(
            _S.c.kind == "day",
            _S.c.status == status,
            _S.c.item >= first.isoformat(),
            _S.c.item <= last.isoformat(),
        )
    )
    return [(c, date.fromisoformat(day), n) for c, day, n in rows]


def final_shapes(
    conn: Connection, *, batch: int, progress: Progress | None = None
) -> tuple[Shapes, int]:
    """The final transfers grouped by recipient, status, their lists as stored JSON
    text (they repeat: a recipient is sent a few shapes of data; ``recount`` parses each
    once) and UTC day, read a batch at a time (a server-side cursor on PostgreSQL); ``progress(done,
    total)`` per batch."""
    total = 0
    if progress is not None:
        total = int(conn.execute(select(func.count()).select_from(_T)).scalar() or 0)
    shapes: Shapes = {}
    done = 0
    # Options of this statement only (Connection.execution_options would keep them).
    streamed = {"stream_results": True, "yield_per": batch}
    for part in conn.execute(_FINAL, execution_options=streamed).partitions():
        for c, s, cats, paths, at in part:
            shape = (c, s, cats, paths, at.date())  # read back as UTC
            row = shapes.get(shape)
            if row is None:
                shapes[shape] = [1, at, at]
                continue
            row[0] += 1
            if at < row[1]:
                row[1] = at
            if at > row[2]:
                row[2] = at
        done += len(part)
        if progress is not None:
            progress(done, max(total, done))
    if progress is not None:
        progress(done, max(total, done))
    return shapes, done


def replace_summary(conn: Connection, *, rows: Sequence[dict[str, Any]]) -> None:
    """Delete every summary row and insert ``rows`` instead (in the caller's transaction)."""
    conn.execute(delete(_S))
    for i in range(0, len(rows), 5000):
        conn.execute(insert(_S), rows[i : i + 5000])
