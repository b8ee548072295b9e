"""The recipient summary: what each third party was sent, counted as outcomes are written.

One row per recipient (``connector_id``), final status and item: the transfer itself
(``kind`` ``transfer``, ``item`` empty), each category it carried (``category``) and each
field path (``field``) and each UTC day of its ``created_at`` (``day``, ``item`` the
ISO date, for the charts: migration 0021), with how many transfers and the first and
last of their ``created_at``. Reports read this table instead of every transfer
(migration 0016).

A row is added to in the transaction that writes the outcome it counts, so the summary
never runs ahead of or behind the transfers it summarises:

- a delivery's outcome (``delivered``, ``failed``, ``outcome_unknown``) and a blocked
  request go through the group-commit audit writer, whose :class:`~broker.store.audit_writer.Event`
  carries the :class:`Outcome`; the writer adds a whole batch's outcomes with one
  prebuilt upsert (:func:`add_outcomes`), and none when the batch has no outcome;
- a cancellation is written in a session and adds its own outcome there.

Pending transfers are not counted (their outcome is not written yet). A transfer ends
once (its outcome is a conditional update from ``pending``), so it is counted once.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, NamedTuple

from sqlalchemy import Connection, Text, func
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Field, SQLModel

from broker.store.types import UTCDateTime

__all__ = [
    "KINDS",
    "Key",
    "Outcome",
    "RecipientSummary",
    "Shapes",
    "Tally",
    "add_outcomes",
    "day_of",
    "outcome_of",
    "rows_of",
    "tally",
    "tally_shapes",
    "upsert",
]

KINDS = ("transfer", "category", "field", "day")


class RecipientSummary(SQLModel, table=True):
    __tablename__ = "recipient_summaries"

    connector_id: str = Field(primary_key=True, max_length=63)
    status: str = Field(primary_key=True, max_length=20)
    kind: str = Field(primary_key=True, max_length=10)
    #: the category, the field path or the ISO day; empty for ``kind`` ``transfer``
    item: str = Field(primary_key=True, sa_type=Text)
    transfers: int
    first_at: datetime = Field(sa_type=UTCDateTime, nullable=False)
    last_at: datetime = Field(sa_type=UTCDateTime, nullable=False)


_S = RecipientSummary.__table__  # type: ignore[attr-defined]


class Outcome(NamedTuple):
    """What one final transfer adds to the summary."""

    connector_id: str
    status: str
    categories: tuple[str, ...] | list[str]
    field_paths: tuple[str, ...] | list[str]
    created_at: datetime


Key = tuple[str, str, str, str]  # connector_id, status, kind, item
Tally = dict[Key, list[Any]]  # key -> [transfers, first_at, last_at]


def outcome_of(t: Any) -> Outcome:
    """The outcome of transfer ``t`` (a ``Transfer``, or its row as a mapping)."""
    get = t.__getitem__ if isinstance(t, Mapping) else t.__getattribute__
    return Outcome(
        get("connector_id"),
        get("status"),
        get("categories"),
        get("field_paths"),
        get("created_at"),
    )


#: (connector_id, status, categories, field paths, UTC day) -> [transfers, first, last]
Shapes = dict[tuple[Any, ...], list[Any]]


def tally(outcomes: Iterable[Outcome], into: Tally | None = None) -> Tally:
    """Count ``outcomes`` per summary key (added to ``into`` if given). Outcomes of the
    same recipient, status, lists and day (most of a batch) are counted together first."""
    shapes: Shapes = {}
    for connector_id, status, categories, paths, at in outcomes:
        shape = (connector_id, status, tuple(categories), tuple(paths), day_of(at))
        seen = shapes.get(shape)
        if seen is None:
            shapes[shape] = [1, at, at]
        else:
            seen[0] += 1
            seen[1], seen[2] = min(seen[1], at), max(seen[2], at)
    return tally_shapes(shapes, into)


def tally_shapes(shapes: Shapes, into: Tally | None = None) -> Tally:
    """Count ``n`` transfers of each shape (first and last ``created_at``) per key."""
    counts: Tally = {} if into is None else into
    for (connector_id, status, categories, paths, day), (n, first, last) in shapes.items():
        keys = [(connector_id, status, "transfer", ""), (connector_id, status, "day", day)]
        keys += [(connector_id, status, "category", c) for c in set(categories)]
        keys += [(connector_id, status, "field", p) for p in set(paths)]
        for key in keys:
            row = counts.get(key)
            if row is None:
                counts[key] = [n, first, last]
            else:
                row[0] += n
                row[1], row[2] = min(row[1], first), max(row[2], last)
    return counts


def day_of(at: datetime) -> str:
    """The ISO UTC day of ``at``: the ``item`` of its ``day`` row."""
    return at.astimezone(UTC).date().isoformat()


def rows_of(counts: Tally) -> list[dict[str, Any]]:
    """The tally as rows of ``recipient_summaries``."""
    return [
        {
            "connector_id": c,
            "status": s,
            "kind": k,
            "item": i,
            "transfers": n,
            "first_at": first,
            "last_at": last,
        }
        for (c, s, k, i), (n, first, last) in counts.items()
    ]


def _upsert(insert: Any, least: Any, greatest: Any) -> Any:
    stmt = insert(_S)
    new = stmt.excluded
    return stmt.on_conflict_do_update(
        index_elements=[_S.c.connector_id, _S.c.status, _S.c.kind, _S.c.item],
        set_={
            "transfers": _S.c.transfers + new.transfers,
            "first_at": least(_S.c.first_at, new.first_at),
            "last_at": greatest(_S.c.last_at, new.last_at),
        },
    )


# Built once per dialect: a reused statement keeps its compiled form and cache key.
# SQLite's two-argument min()/max() are scalar; datetimes are stored as sortable text.
_UPSERT = {
    "sqlite": _upsert(sqlite.insert, func.min, func.max),
    "postgresql": _upsert(postgresql.insert, func.least, func.greatest),
}


def upsert(conn: Connection) -> Any:
    """The prebuilt ``INSERT … ON CONFLICT DO UPDATE`` for ``conn``'s dialect."""
    return _UPSERT[conn.dialect.name]


def add_outcomes(conn: Connection, outcomes: list[Outcome]) -> None:
    """Add ``outcomes`` to the summary in ``conn``'s transaction: one executemany of
    one row per distinct key (none when there is no outcome)."""
    if outcomes:
        conn.execute(upsert(conn), rows_of(tally(outcomes)))
