"""Keyset paging over transfers, newest first: (created_at, id) cursors.

A cursor is the last row's ``(created_at, id)`` as base64url JSON; the next
page is every row strictly before it in that order. Rows inserted meanwhile
never shift a page, unlike offsets.
"""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine
from sqlmodel import Session

from broker.core.errors import InvalidInput
from broker.flows.share import transfer_dict
from broker.store.models import Transfer
from broker.store.transfers import transfer_page

__all__ = ["cursor_for", "decode_cursor", "encode_cursor", "page"]


def encode_cursor(t: Transfer) -> str:
    return cursor_for(t.created_at, t.id)


def cursor_for(created: datetime, row_id: str) -> str:
    """The cursor after a row created at ``created`` with id ``row_id`` (any table
    paged newest first by ``(created_at, id)``)."""
    raw = json.dumps([created.isoformat(), row_id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """The ``(created_at, id)`` a cursor names; anything else (not base64 JSON, a time
    without a zone or out of range once in UTC, a non-string id) is ``InvalidInput``."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created, tid = json.loads(raw)
        if not isinstance(created, str) or not isinstance(tid, str):
            raise TypeError
        when = datetime.fromisoformat(created)
        if when.tzinfo is None:
            raise ValueError
        return when.astimezone(UTC), tid
    except (ValueError, TypeError, OverflowError, RecursionError):
        raise InvalidInput("cursor is not valid", details={"field": "cursor"}) from None


def page(
    engine: Engine,
    stmt: Any,
    *,
    cursor: str | None,
    limit: int,
    keys: tuple[Any, Any] = (Transfer.created_at, Transfer.id),
) -> tuple[list[dict[str, Any]], str | None]:
    """One page of ``stmt`` (a select of Transfer), newest first, after ``cursor``;
    the next cursor is None on the last page. ``keys``: the columns holding the
    transfer's ``(created_at, id)`` to order by (a joined table's copy of them, so
    its index gives the page order)."""
    after = decode_cursor(cursor) if cursor else None
    with Session(engine) as session:
        rows = transfer_page(session, stmt, after=after, limit=limit, keys=keys)
    more = len(rows) > limit
    rows = rows[:limit]
    return [transfer_dict(t) for t in rows], (encode_cursor(rows[-1]) if more else None)
