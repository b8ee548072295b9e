"""The recipient summary (:mod:`broker.store.summaries`): read it, check it, rebuild it.

``check`` recounts the summary from the transfers and lists every row that differs;
``rebuild`` rewrites it from that recount. Both hold the audit append lock (the chain
head) while they count, so no outcome is written meanwhile and the recount and the
stored rows describe the same transfers; deliveries wait for them (a few seconds at
10^6 transfers, see ``bench/audit_scale.py``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy import Connection, Engine, Text, cast, delete, func, insert, select
from sqlmodel import Session

from broker.core.statuses import (
    DISCLOSED_TRANSFER_STATUSES,
    FINAL_TRANSFER_STATUSES,
    TransferStatus,
)
from broker.core.times import rfc3339
from broker.store.audit import lock_head
from broker.store.db import write_lock
from broker.store.models import Transfer
from broker.store.summaries import (
    Key,
    RecipientSummary,
    Shapes,
    Tally,
    rows_of,
    tally_shapes,
)

__all__ = [
    "Difference",
    "SummaryCheck",
    "check_summary",
    "daily_counts",
    "read_summary",
    "recipient_figures",
    "recount",
]

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


@dataclass(frozen=True)
class Difference:
    """One summary row that is not what the transfers say: ``stored`` or ``expected``
    is None when the row is missing on that side; else ``(transfers, first, last)``."""

    key: Key
    stored: tuple[int, datetime, datetime] | None
    expected: tuple[int, datetime, datetime] | None

    def to_dict(self) -> dict[str, Any]:
        connector_id, status, kind, item = self.key

        def side(v: tuple[int, datetime, datetime] | None) -> dict[str, Any] | None:
            if v is None:
                return None
            return {"transfers": v[0], "first_at": rfc3339(v[1]), "last_at": rfc3339(v[2])}

        return {
            "connector_id": connector_id,
            "status": status,
            "kind": kind,
            "item": item,
            "stored": side(self.stored),
            "expected": side(self.expected),
        }


@dataclass(frozen=True)
class SummaryCheck:
    transfers: int  # final transfers recounted
    rows: int  # summary rows the transfers give
    differences: list[Difference]
    rebuilt: bool

    @property
    def ok(self) -> bool:
        return not self.differences

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "transfers": self.transfers,
            "rows": self.rows,
            "rebuilt": self.rebuilt,
            "differences": [d.to_dict() for d in self.differences],
        }


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


def _shapes(conn: Connection, batch: int, progress: Progress | None) -> tuple[Shapes, int]:
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


def recount(
    conn: Connection, *, progress: Progress | None = None, batch: int = 5000
) -> tuple[Tally, int]:
    """The summary as the transfers give it, and how many final transfers it counts;
    ``progress(done, total)`` per batch read."""
    shapes, done = _shapes(conn, batch, progress)
    lists: dict[str | None, tuple[str, ...]] = {None: ()}  # each distinct text parsed once

    def parse(text: str | None) -> tuple[str, ...]:
        found = lists.get(text)
        if found is None:
            found = lists[text] = tuple(json.loads(text))  # type: ignore[arg-type]
        return found

    counts: Tally = {}
    for (c, s, cats, paths, day), v in shapes.items():  # texts that differ may parse equal
        tally_shapes({(c, s, parse(cats), parse(paths), day.isoformat()): v}, into=counts)
    return counts, done


def _differences(stored: Tally, expected: Tally) -> list[Difference]:
    out = []
    for key in sorted(set(stored) | set(expected)):
        s, e = stored.get(key), expected.get(key)
        if s != e:
            out.append(Difference(key, tuple(s) if s else None, tuple(e) if e else None))  # type: ignore[arg-type]
    return out


def check_summary(
    engine: Engine, *, rebuild: bool = False, check: bool = True, progress: Progress | None = None
) -> SummaryCheck:
    """Recount the summary from the transfers under the append lock; with ``check``,
    list the rows that differ from the stored ones; with ``rebuild``, replace the stored
    rows by the recount (in the same transaction)."""
    with write_lock(engine), Session(engine) as session:
        lock_head(session)  # no outcome is written while we count
        conn = session.connection()
        expected, transfers = recount(conn, progress=progress)
        differences = _differences(read_summary(conn), expected) if check else []
        if rebuild:
            conn.execute(delete(_S))
            rows = rows_of(expected)
            for i in range(0, len(rows), 5000):
                conn.execute(insert(_S), rows[i : i + 5000])
        session.commit()
    return SummaryCheck(transfers, len(expected), differences, rebuild)
