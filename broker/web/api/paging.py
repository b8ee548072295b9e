"""One paging style for every list: ``limit`` and ``cursor`` in, ``next_cursor`` out
(``null`` on the last page). A cursor is opaque to clients; for the audit log and the
checkpoints it is the last ``seq`` / ``id`` seen, so the old ``after`` / ``after_id``
parameters (deprecated) and ``next_after`` / ``next_after_id`` fields agree with it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, TypeVar

from fastapi import Query

from broker.core.errors import InvalidInput
from broker.web.deps import SQL_INT_MAX

__all__ = ["Cursor", "Limit", "page_after", "position"]

T = TypeVar("T")
Page = tuple[list[T], str | None]

Cursor = Annotated[
    str | None,
    Query(max_length=500, description="the next_cursor of the page before; absent: the first"),
]
Limit = Annotated[int, Query(ge=1, le=500, description="at most this many items")]


def position(cursor: str | None, old: int, old_name: str) -> int:
    """Where a page of a sequence starts: after ``cursor`` (a number the broker issued),
    or after the old parameter's value ``old``; both given must agree."""
    if cursor is None:
        return old
    if not cursor.isascii() or not cursor.isdigit() or int(cursor) > SQL_INT_MAX:
        raise InvalidInput("cursor is not one the broker issued", details={"field": "cursor"})
    value = int(cursor)
    if old and old != value:
        raise InvalidInput(
            f"cursor and {old_name} (deprecated) disagree", details={"field": "cursor"}
        )
    return value


def page_after(items: Sequence[T], ids: Sequence[str], cursor: str | None, limit: int) -> Page[T]:
    """A page of ``items`` (already in their order; ``ids`` theirs): those after the one
    whose id is ``cursor``, at most ``limit``; and the cursor of the next page."""
    start = 0
    if cursor is not None:
        if cursor not in ids:
            raise InvalidInput("cursor is not one the broker issued", details={"field": "cursor"})
        start = ids.index(cursor) + 1
    page = list(items[start : start + limit])
    more = start + limit < len(items)
    return page, (ids[start + limit - 1] if more else None)
