"""The log's format version: starting format 2 on a log begun in format 1.

Migration 0015 records in ``audit_formats`` from which entry the log is in format 2:
entry 1 for an empty log; for a log that already holds format-1 entries, nothing yet.
:func:`start_format` (run when the broker starts) then appends the ``log.format``
handover entry, which commits to the format-1 log's final tree size and RFC 9162 root
(``broker.core.pseudonyms.handover_details``), and records its seq. Format-1 entries
are never rewritten; every entry after the handover names users by pseudonym and
salts its payload digest. Concurrent starters serialise on the chain head lock: one
writes the handover, the others find it recorded.
"""

from __future__ import annotations

from sqlmodel import Session

from broker.core.pseudonyms import FORMAT_EVENT, LOG_FORMAT, handover_details
from broker.runtime import Runtime
from broker.store.audit import append_event, frontier_for, lock_head
from broker.store.db import session_scope
from broker.store.subjects import LogFormat

__all__ = ["start_format"]


def start_format(rt: Runtime) -> int | None:
    """Append the ``log.format`` handover entry if it is due; returns its seq (None:
    nothing to do)."""
    with Session(rt.engine) as session:
        row = session.get(LogFormat, LOG_FORMAT)
    if row is None or row.first_seq is not None:
        return None
    with session_scope(rt.engine) as session:
        head = lock_head(session)  # from here on nobody else appends
        row = session.get(LogFormat, LOG_FORMAT, populate_existing=True)
        if row is None or row.first_seq is not None:
            return None  # another process wrote it meanwhile
        if head.seq == 0:
            row.first_seq = 1
            session.add(row)
            return None
        root = frontier_for(session.connection(), head.seq, head.hash).root()
        entry = append_event(
            session,
            head_file=rt.settings.audit_head_file,
            time=rt.clock(),
            event=FORMAT_EVENT,
            actor="broker",
            outcome=f"format-{LOG_FORMAT}",
            details=handover_details(previous_size=head.seq, previous_root=root),
        )
        row.first_seq = entry.seq
        session.add(row)
    return entry.seq
