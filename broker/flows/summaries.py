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
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine
from sqlmodel import Session

from broker.core.times import rfc3339
from broker.store.audit import lock_head
from broker.store.db import write_lock
from broker.store.summaries import (
    Key,
    Tally,
    rows_of,
    tally_shapes,
)
from broker.store.summary_queries import (
    daily_counts,
    final_shapes,
    read_summary,
    recipient_figures,
    replace_summary,
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


def recount(
    conn: Connection, *, progress: Progress | None = None, batch: int = 5000
) -> tuple[Tally, int]:
    """The summary as the transfers give it, and how many final transfers it counts;
    ``progress(done, total)`` per batch read."""
    shapes, done = final_shapes(conn, batch=batch, progress=progress)
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
            replace_summary(conn, rows=rows_of(expected))
        session.commit()
    return SummaryCheck(transfers, len(expected), differences, rebuild)
