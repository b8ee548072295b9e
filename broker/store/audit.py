"""Appending to and reading the audit log table.

``append_event`` runs inside the caller's transaction, so an event commits or
rolls back with the change it records. It first takes the head row's lock,
which serialises appends across threads and processes; after the commit the
new head is also written to ``BROKER_HOME/audit.head`` (outside the
database) so that a truncated table can be detected.

The head file is written by a background thread that coalesces commits (an
fsync per commit would cost more than the transfer itself), so it may lag
the table by a fraction of a second; a lagging head is safe (verification
treats it as a lower bound). ``flush_head_files`` writes what is pending
now; verification and process exit call it.
"""

from __future__ import annotations

import atexit
import logging
import threading
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, event, update
from sqlmodel import Session, col, select

from broker.core.audit_chain import (
    GENESIS_HASH,
    AuditEntry,
    ChainHead,
    format_time,
    read_head,
    seal,
    write_head,
)
from broker.store.models import AuditHead, AuditRow

__all__ = ["append_event", "flush_head_files", "iter_entries", "latest_head", "row_to_entry"]

_PENDING = "broker.audit_head_pending"
log = logging.getLogger("broker.audit")


class _HeadWriter:
    """Writes the newest committed head per file, off the request path."""

    def __init__(self) -> None:
        self._pending: dict[Path, ChainHead] = {}
        self._lock = threading.Lock()  # guards _pending
        self._write_lock = threading.Lock()  # one writer at a time
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def submit(self, path: Path, head: ChainHead) -> None:
        with self._lock:
            current = self._pending.get(path)
            if current is None or current.seq < head.seq:
                self._pending[path] = head
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="audit-head-writer", daemon=True
                )
                self._thread.start()
        self._wake.set()

    def _run(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            try:
                self.flush()
            except Exception as exc:  # keep running; verification reports a bad head file
                log.error("could not write the audit head file: %s", exc)

    def flush(self) -> None:
        with self._write_lock:
            with self._lock:
                batch, self._pending = self._pending, {}
            for path, head in batch.items():
                current = read_head(path) if path.exists() else None
                if current is None or current.seq < head.seq:
                    write_head(path, head)


_WRITER = _HeadWriter()
atexit.register(_WRITER.flush)


def flush_head_files() -> None:
    """Write every pending head now (the writer thread may still be behind)."""
    _WRITER.flush()


def row_to_entry(row: AuditRow) -> AuditEntry:
    return AuditEntry.from_dict(row.model_dump())


def _lock_head(session: Session) -> AuditHead:
    bind = session.get_bind()
    if bind.dialect.name == "sqlite":
        # A write takes SQLite's single write lock now, before we read the head.
        session.exec(update(AuditHead).where(col(AuditHead.id) == 1).values(seq=AuditHead.seq))
        head = session.get(AuditHead, 1, populate_existing=True)
    else:
        head = session.exec(select(AuditHead).where(AuditHead.id == 1).with_for_update()).first()
    if head is None:  # first use of a fresh schema
        head = AuditHead(id=1, seq=0, hash=GENESIS_HASH)
        session.add(head)
        session.flush()
    return head


def append_event(
    session: Session,
    *,
    head_file: Path | None,
    time: datetime,
    event: str,
    actor: str | None,
    **fields: Any,
) -> AuditEntry:
    """Seal and insert the next entry; the caller commits."""
    head = _lock_head(session)
    content: dict[str, Any] = {
        "seq": head.seq + 1,
        "time": format_time(time),
        "event": event,
        "actor": actor,
    }
    content.update({k: v for k, v in fields.items() if v is not None})
    entry = seal(content, head.hash)
    data = entry.to_dict()
    session.add(AuditRow(**data))
    head.seq, head.hash = entry.seq, entry.hash
    session.add(head)
    session.flush()
    if head_file is not None:
        session.info[_PENDING] = (head_file, ChainHead(entry.seq, entry.hash))
    return entry


@event.listens_for(Session, "after_commit")
def _write_head_file(session: Session) -> None:
    pending = session.info.pop(_PENDING, None)
    if pending is None:
        return
    _WRITER.submit(*pending)


@event.listens_for(Session, "after_rollback")
def _forget_head(session: Session) -> None:
    session.info.pop(_PENDING, None)


def latest_head(engine: Engine) -> ChainHead | None:
    with Session(engine) as session:
        head = session.get(AuditHead, 1)
    return ChainHead(head.seq, head.hash) if head and head.seq else None


def iter_entries(engine: Engine, *, after: int = 0, batch: int = 2000) -> Iterator[AuditEntry]:
    """Every entry with seq > ``after`` in seq order, streamed in batches."""
    last = after
    while True:
        with Session(engine) as session:
            rows = session.exec(
                select(AuditRow).where(AuditRow.seq > last).order_by(col(AuditRow.seq)).limit(batch)
            ).all()
        if not rows:
            return
        for row in rows:
            yield row_to_entry(row)
        last = rows[-1].seq
