"""Appending to and reading the audit log table.

``append_event`` runs inside the caller's transaction, so an event commits or
rolls back with the change it records. It first takes the head row's lock,
which serialises appends across threads and processes; under that lock it
also adds the entry's leaf to the Merkle tree (``merkle_nodes``: the leaf and
every complete subtree it completes, at most log2(n) + 1 rows, computed from
the previous right edge), so the chain, the tree and the head never disagree.
After the commit the new head is also written to ``BROKER_HOME/audit.head``
(outside the database) so that a truncated table can be detected, and the
engine's append listeners (``on_append``: the checkpoint trigger) are told.

The right edge (``Frontier``) of the last committed tree is cached per engine,
keyed by the head it belongs to (seq and chain hash); an append that finds
another head (a rollback, another process) reads it from ``merkle_nodes``.

The head file is written by a background thread that coalesces commits (an
fsync per commit would cost more than the transfer itself; it writes at most
every 0.2 s), so it may lag the table by a fraction of a second; a lagging
head is safe (verification treats it as a lower bound). ``flush_head_files`` writes what is pending
now; verification and process exit call it.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, event, insert, update
from sqlmodel import Session, col, select

from broker.core.audit_chain import (
    ENTRY_FIELDS,
    GENESIS_HASH,
    AuditEntry,
    ChainHead,
    canonical_bytes,
    format_time,
    read_head,
    seal,
    write_head,
)
from broker.core.merkle import Frontier, Node, leaf_hash, node_position, root_nodes
from broker.store import webhook_outbox
from broker.store.merkle_models import MerkleNode
from broker.store.models import AuditHead, AuditRow
from broker.store.subjects import subjects_of

__all__ = [
    "append_event",
    "appended",
    "fetch_nodes",
    "flush_head_files",
    "frontier_for",
    "iter_canonical",
    "iter_entries",
    "latest_head",
    "lock_head",
    "on_append",
    "row_to_entry",
]

_PENDING = "broker.audit_head_pending"
_APPENDED = "broker.audit_appended"
_FRONTIERS: weakref.WeakKeyDictionary[Engine, tuple[int, str, Frontier]] = (
    weakref.WeakKeyDictionary()
)
_LISTENERS: weakref.WeakKeyDictionary[Engine, list[Callable[[int], None]]] = (
    weakref.WeakKeyDictionary()
)
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
        # Resolved now: the write happens later, when the process may have changed
        # its working directory (a relative BROKER_HOME must not follow it).
        path = Path(os.path.abspath(path))  # no symlink walk: one getcwd, no lstat per part
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

    # Two fsyncs and a rename per write: at most this often (the file may lag the
    # table by this much; verification treats it as a lower bound).
    MIN_INTERVAL = 0.2

    def _run(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            try:
                self.flush()
            except Exception as exc:  # keep running; verification reports a bad head file
                log.error("could not write the audit head file: %s", exc)
            time.sleep(self.MIN_INTERVAL)  # later heads coalesce meanwhile

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


def on_append(engine: Engine, listener: Callable[[int], None]) -> Callable[[], None]:
    """Call ``listener(seq)`` after each commit that appended to ``engine``'s log
    (seq: the last entry it committed). Returns a function that removes it."""
    _LISTENERS.setdefault(engine, []).append(listener)

    def remove() -> None:
        listeners = _LISTENERS.get(engine, [])
        if listener in listeners:
            listeners.remove(listener)

    return remove


def fetch_nodes(session: Session, nodes: set[Node]) -> dict[Node, bytes]:
    """The stored hashes of the given complete subtrees (missing ones are left out);
    one query, by primary key."""
    if not nodes:
        return {}
    t = MerkleNode.__table__  # type: ignore[attr-defined]
    by_pos = {node_position(n): n for n in nodes}
    rows = session.execute(select(t.c.pos, t.c.hash).where(t.c.pos.in_(by_pos))).all()
    return {by_pos[pos]: bytes(h) for pos, h in rows}


def iter_canonical(engine: Engine, *, batch: int = 5000) -> Iterator[tuple[bytes, str, str]]:
    """``(canonical content, hash, prev_hash)`` of every stored entry in seq order, read
    straight from the columns (no validation: an export shows rows as they are)."""
    t = AuditRow.__table__  # type: ignore[attr-defined]
    columns = [*(t.c[name] for name in ENTRY_FIELDS), t.c.hash, t.c.prev_hash]
    last = 0
    while True:
        with engine.connect() as conn:
            rows = conn.execute(
                select(*columns).where(t.c.seq > last).order_by(t.c.seq).limit(batch)
            ).all()
        if not rows:
            return
        for row in rows:
            content = dict(zip(ENTRY_FIELDS, row[:-2], strict=True))
            yield canonical_bytes(content), row[-2], row[-1]
        last = rows[-1][0]


def _frontier(session: Session, head: AuditHead) -> Frontier:
    engine = session.get_bind()
    cached = session.info.get(_APPENDED)  # an earlier append in this transaction
    if cached is None and isinstance(engine, Engine):
        cached = _FRONTIERS.get(engine)
    if cached is not None and cached[0] == head.seq and cached[1] == head.hash:
        return Frontier(head.seq, list(cached[2].hashes))
    wanted = root_nodes(head.seq)
    found = fetch_nodes(session, set(wanted))
    if len(found) != len(wanted):
        raise RuntimeError(
            f"the Merkle tree does not cover the {head.seq} entries of the log; "
            "run `broker db upgrade`"
        )
    return Frontier.of(head.seq, found)


def frontier_for(conn: Any, seq: int, chain_hash: str) -> Frontier:
    """The tree's right edge after ``seq`` entries (head hash ``chain_hash``): the cached
    one if it is of that head, else read from ``merkle_nodes`` on ``conn``."""
    engine = conn.engine if hasattr(conn, "engine") else None
    cached = _FRONTIERS.get(engine) if isinstance(engine, Engine) else None
    if cached is not None and cached[0] == seq and cached[1] == chain_hash:
        return Frontier(seq, list(cached[2].hashes))
    wanted = root_nodes(seq)
    found = fetch_nodes(conn, set(wanted))
    if len(found) != len(wanted):
        raise RuntimeError(
            f"the Merkle tree does not cover the {seq} entries of the log; run `broker db upgrade`"
        )
    return Frontier.of(seq, found)


def appended(
    engine: Engine, head: ChainHead, frontier: Frontier, *, head_file: Path | None
) -> None:
    """After a commit that appended up to ``head`` outside ``append_event`` (the group
    writer): cache the tree's edge, queue the head file, tell the listeners."""
    _FRONTIERS[engine] = (head.seq, head.hash, frontier)
    if head_file is not None:
        _WRITER.submit(head_file, head)
    for listener in list(_LISTENERS.get(engine, ())):
        try:
            listener(head.seq)
        except Exception:  # the append is committed; a listener must not undo that
            log.exception("audit append listener failed")


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


def lock_head(session: Session) -> AuditHead:
    """Take the append lock (the head row) in ``session``'s transaction and return the
    head: whoever holds it sees a log nobody else is appending to."""
    return _lock_head(session)


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
    subjects = subjects_of(session)
    entry = seal(subjects.apply(content), head.hash)  # format 2: pseudonyms, not user ids
    frontier = _frontier(session, head)
    written = frontier.append(leaf_hash(entry.canonical()))
    data = entry.to_dict()
    session.add(AuditRow(**data))
    head.seq, head.hash = entry.seq, entry.hash
    session.add(head)
    session.flush()
    session.execute(
        insert(MerkleNode),
        [{"pos": node_position((lv, ix)), "hash": h} for lv, ix, h in written],
    )
    # webhooks, in this transaction (to the host, which knows its users: in clear)
    webhook_outbox.enqueue(session.connection(), [entry], names=subjects.names())
    session.info[_APPENDED] = (entry.seq, entry.hash, frontier)
    if head_file is not None:
        session.info[_PENDING] = (head_file, ChainHead(entry.seq, entry.hash))
    return entry


@event.listens_for(Session, "after_commit")
def _write_head_file(session: Session) -> None:
    appended = session.info.pop(_APPENDED, None)
    pending = session.info.pop(_PENDING, None)
    if pending is not None:
        _WRITER.submit(*pending)
    if appended is None:
        return
    engine = session.get_bind()
    if not isinstance(engine, Engine):
        return
    _FRONTIERS[engine] = appended
    for listener in list(_LISTENERS.get(engine, ())):
        try:
            listener(appended[0])
        except Exception:  # the append is committed; a listener must not undo that
            log.exception("audit append listener failed")


@event.listens_for(Session, "after_rollback")
def _forget_head(session: Session) -> None:
    session.info.pop(_PENDING, None)
    session.info.pop(_APPENDED, None)


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
