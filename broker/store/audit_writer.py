"""Group commit: one writer thread appends to the audit log for many callers at once.

The hot writes of the delivery path (a transfer accepted, a transfer's outcome)
are *units*: a function that makes its row changes on a SQLAlchemy Core
connection and returns the audit events they need plus a value for its caller.
Callers hand units to :meth:`AuditWriter.run` and wait; the writer thread takes
every unit queued at that moment (up to ``max_batch``) and commits them in **one
transaction**, with one lock of the chain head, one Merkle update and one fsync:

1. lock the head (``FOR UPDATE`` on PostgreSQL, SQLite's write lock), the same
   lock :func:`broker.store.audit.append_event` takes, so both paths serialise
   across threads and processes and the chain cannot fork;
2. run the units and seal their events in order; insert all entries at once and
   add their leaves to the tree; if a unit fails (an idempotency key taken
   meanwhile), the batch is rolled back and run again with each unit in a
   savepoint, so only that unit fails and its caller gets the exception;
3. update the head;
4. commit; then tell the callers, remember the tree's right edge, and notify the
   append listeners (the checkpoint trigger) once for the batch.

The chain order is the commit order. One writer per process and engine
(:func:`audit_writer`).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import weakref
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, bindparam, insert, select, update

from broker.core.audit_chain import GENESIS_HASH, ChainHead, format_time, seal
from broker.core.merkle import leaf_hash, node_position
from broker.store import audit as audit_store
from broker.store import summaries, webhook_outbox
from broker.store.db import write_lock
from broker.store.merkle_models import MerkleNode
from broker.store.models import AuditHead, AuditRow
from broker.store.subjects import Subjects

__all__ = ["AuditWriter", "Event", "Unit", "audit_writer"]

log = logging.getLogger("broker.audit")

_HEAD = AuditHead.__table__  # type: ignore[attr-defined]
_LOG = AuditRow.__table__  # type: ignore[attr-defined]
_NODES = MerkleNode.__table__  # type: ignore[attr-defined]


@dataclass(frozen=True)
class Event:
    """One audit entry to append: what ``append_event`` takes, minus the session."""

    time: datetime
    event: str
    actor: str | None
    fields: dict[str, Any]
    #: the final transfer this event records, counted in the recipient summary in
    #: the same transaction (one upsert for the batch's outcomes; broker.store.summaries)
    summary: summaries.Outcome | None = None


Unit = Callable[[Connection], tuple[list[Event], Any]]


@dataclass
class _Job:
    unit: Unit
    future: Future[Any]


# Built once: a reused statement keeps its compiled form and cache key.
_LOCK_SQLITE = (  # the write takes SQLite's lock; one statement
    update(_HEAD)
    .where(_HEAD.c.id == 1)
    .values(seq=_HEAD.c.seq)
    .returning(_HEAD.c.seq, _HEAD.c.hash)
)
_LOCK_ROW = select(_HEAD.c.seq, _HEAD.c.hash).where(_HEAD.c.id == 1).with_for_update()
_INSERT_ENTRIES = insert(_LOG)
_INSERT_NODES = insert(_NODES)
_MOVE_HEAD = (
    update(_HEAD)
    .where(_HEAD.c.id == 1)
    .values(seq=bindparam("new_seq"), hash=bindparam("new_hash"))
)


def _lock_head(conn: Connection) -> tuple[int, str]:
    row = conn.execute(_LOCK_SQLITE if conn.dialect.name == "sqlite" else _LOCK_ROW).first()
    if row is None:  # first use of a fresh schema
        conn.execute(insert(_HEAD).values(id=1, seq=0, hash=GENESIS_HASH))
        return 0, GENESIS_HASH
    return int(row[0]), str(row[1])


class AuditWriter:
    def __init__(self, engine: Engine, *, head_file: Path | None, max_batch: int = 256) -> None:
        self.engine = engine
        self.head_file = head_file
        self.max_batch = max_batch
        self._queue: queue.SimpleQueue[_Job] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._guard = threading.Lock()
        self.batches = 0  # commits made (for metrics and the bench)
        self.entries = 0
        self.on_batch: Callable[[int, float], None] | None = None  # (entries, seconds)

    def run(self, unit: Unit) -> Any:
        """Run ``unit`` in the next group commit; returns its value or raises its error."""
        job = _Job(unit, Future())
        self._queue.put(job)
        self._ensure_thread()
        return job.future.result()

    def _ensure_thread(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        with self._guard:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name="audit-writer", daemon=True)
                self._thread.start()

    def _loop(self) -> None:
        while True:
            batch = [self._queue.get()]
            while len(batch) < self.max_batch:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            try:
                self._commit(batch, isolate=False)
            except BaseException as exc:
                if len(batch) == 1:
                    batch[0].future.set_exception(exc)
                    continue
                try:  # one unit failed and took the batch down: again, each alone
                    self._commit(batch, isolate=True)
                except BaseException as again:  # the transaction itself failed
                    for job in batch:
                        if not job.future.done():
                            job.future.set_exception(again)

    def _commit(self, batch: list[_Job], *, isolate: bool) -> None:
        """One transaction for ``batch``. ``isolate``: each unit in a savepoint, so a
        failing one is rolled back alone (the retry after a failed fast attempt)."""
        started = time.perf_counter()
        done: list[tuple[_Job, Any]] = []
        failed: list[tuple[_Job, BaseException]] = []
        with write_lock(self.engine), self.engine.begin() as conn:
            seq, prev = _lock_head(conn)
            frontier = audit_store.frontier_for(conn, seq, prev)
            start_seq = seq
            rows: list[dict[str, Any]] = []
            entries: list[Any] = []
            outcomes: list[summaries.Outcome] = []
            subjects = Subjects(conn)  # format 2: entries name users by pseudonym
            for job in batch:
                savepoint = conn.begin_nested() if isolate else None
                mark = subjects.mark() if isolate else None
                try:
                    events, value = job.unit(conn)
                    mine, s, h = [], seq, prev
                    for ev in events:
                        content: dict[str, Any] = {
                            "seq": s + 1,
                            "time": format_time(ev.time),
                            "event": ev.event,
                            "actor": ev.actor,
                        }
                        content.update({k: v for k, v in ev.fields.items() if v is not None})
                        entry = seal(subjects.apply(content), h)
                        mine.append(entry)
                        s, h = entry.seq, entry.hash
                    if savepoint is not None:
                        if mine:
                            conn.execute(_INSERT_ENTRIES, [e.to_row() for e in mine])
                        savepoint.commit()
                except BaseException as exc:
                    if savepoint is None:
                        raise
                    savepoint.rollback()
                    subjects.rolled_back(mark or {})
                    failed.append((job, exc))
                    continue
                if savepoint is None:
                    rows.extend(e.to_row() for e in mine)
                entries.extend(mine)
                outcomes.extend(ev.summary for ev in events if ev.summary is not None)
                seq, prev = s, h
                done.append((job, value))
            if rows:
                conn.execute(_INSERT_ENTRIES, rows)
            summaries.add_outcomes(conn, outcomes)  # nothing when there is no outcome
            # webhooks, in this transaction (to the host, which knows its users: in clear)
            webhook_outbox.enqueue(conn, entries, names=subjects.names())
            if seq != start_seq:
                nodes = [
                    {"pos": node_position((lv, ix)), "hash": digest}
                    for entry in entries
                    for lv, ix, digest in frontier.append(leaf_hash(entry.canonical()))
                ]
                conn.execute(_INSERT_NODES, nodes)
                conn.execute(_MOVE_HEAD, {"new_seq": seq, "new_hash": prev})
        subjects.committed()
        self.batches += 1
        self.entries += seq - start_seq
        for job, error in failed:
            job.future.set_exception(error)
        for job, value in done:
            job.future.set_result(value)
        if seq != start_seq:
            audit_store.appended(
                self.engine, ChainHead(seq, prev), frontier, head_file=self.head_file
            )
        if self.on_batch is not None:
            self.on_batch(seq - start_seq, time.perf_counter() - started)


_WRITERS: weakref.WeakKeyDictionary[Engine, AuditWriter] = weakref.WeakKeyDictionary()
_WRITERS_GUARD = threading.Lock()


def audit_writer(engine: Engine, *, head_file: Path | None) -> AuditWriter:
    """This process's writer for ``engine``."""
    with _WRITERS_GUARD:
        writer = _WRITERS.get(engine)
        if writer is None:
            writer = _WRITERS[engine] = AuditWriter(engine, head_file=head_file)
        return writer
