"""The whole audit log as auditors read it: every event (consents granted and
withdrawn, revocations, disclosures, transfers, key rotations, policy changes,
verifications, failed console sign-ins …), filtered and paged newest first.

Pages use the transfers' keyset cursors (:mod:`broker.flows.paging`): a cursor
names the last entry's ``(time, seq)``; the next page is every entry before that
``seq``. Appends meanwhile never shift a page.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlmodel import Session

from broker.core.audit_chain import format_time
from broker.core.errors import InvalidInput
from broker.flows.filter_times import filter_time
from broker.flows.paging import cursor_for, decode_cursor
from broker.runtime import Runtime
from broker.store import events as entries
from broker.store.models import AuditRow
from broker.store.subjects import named_entry, resolve_rows

__all__ = ["EVENT_GROUPS", "EventFilter", "entry_dict", "event_names", "list_events"]

# What the Events view offers to filter by, besides each event name found in the log:
# a group matches every event whose name starts with it (``consent.`` …).
EVENT_GROUPS = {
    "consent.": "Consents (granted, withdrawn)",
    "connection.": "Connections (created, activated, revoked, …)",
    "transfer.": "Transfers (every outcome)",
    "disclosure.": "Legal disclosures",
    "preference.": "Objections to uses (Art. 21)",
    "policy.": "Policy and terms changes",
    "key.": "Key rotations",
    "audit.": "Verifications",
    "console.": "Console sign-ins refused",
}


@dataclass(frozen=True)
class EventFilter:
    """``event``: an event name (``policy.changed``) or a group (``policy.``)."""

    event: str | None = None
    user_id: str | None = None
    connector_id: str | None = None
    transfer_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None

    def __post_init__(self) -> None:
        for name in ("since", "until"):
            object.__setattr__(self, name, filter_time(getattr(self, name), name))

    def conditions(self) -> entries.EntryConditions:
        """The filter as :func:`broker.store.events.where_matching` takes it; a time out
        of the log's range is ``InvalidInput``."""
        # entry times are fixed-width UTC text (format_time): compared as text
        return {
            "event": self.event,
            "user_id": self.user_id,
            "connector_id": self.connector_id,
            "transfer_id": self.transfer_id,
            "since": _text(self.since, "since") if self.since else None,
            "until": _text(self.until, "until") if self.until else None,
        }


def _text(value: datetime, name: str) -> str:
    try:
        return format_time(value)
    except (OverflowError, ValueError):
        raise InvalidInput(f"{name} is out of range", details={"field": name}) from None


def entry_dict(row: AuditRow) -> dict[str, Any]:
    return {
        "seq": row.seq,
        "time": datetime.fromisoformat(row.time.replace("Z", "+00:00")),
        "event": row.event,
        "actor": row.actor,
        "user_id": row.user_id,
        "connector": row.connector_id,
        "connection_id": row.connection_id,
        "transfer_id": row.transfer_id,
        "consent_id": row.consent_id,
        "categories": list(row.categories),
        "outcome": row.outcome,
        "details": dict(row.details),
        "hash": row.hash,
    }


def list_events(
    rt: Runtime, flt: EventFilter, *, cursor: str | None = None, limit: int = 50
) -> tuple[list[dict[str, Any]], str | None]:
    """Entries matching ``flt``, newest first; ``next_cursor`` is None on the last page."""
    if not 1 <= limit <= 500:
        raise InvalidInput("limit must be between 1 and 500", details={"field": "limit"})
    conditions = flt.conditions()
    before = None
    if cursor:
        _, seq = decode_cursor(cursor)
        if not seq.isdigit():
            raise InvalidInput("cursor is not valid", details={"field": "cursor"})
        before = int(seq)
    with Session(rt.engine) as session:
        rows = entries.entry_page(session, before_seq=before, limit=limit, **conditions)
        named = resolve_rows(session.connection(), rows)  # pseudonyms whose key exists
    more = len(rows) > limit
    items = [named_entry(entry_dict(r), named) for r in rows[:limit]]
    last = items[-1] if more else None
    return items, (cursor_for(last["time"].astimezone(UTC), str(last["seq"])) if last else None)


def event_names(rt: Runtime) -> list[str]:
    """Every event name in the log (read from the event index)."""
    with Session(rt.engine) as session:
        return entries.event_names(session)
