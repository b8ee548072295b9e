"""Engines, sessions and schema upgrades for SQLite and PostgreSQL."""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

try:
    import fcntl
except ImportError:  # Windows has no flock: SQLite's busy handler alone there
    fcntl = None  # type: ignore[assignment]

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, event
from sqlmodel import Session, create_engine

__all__ = [
    "alembic_config",
    "create_db_engine",
    "schema_revisions",
    "session_scope",
    "upgrade_schema",
    "write_lock",
]

_MIGRATIONS = Path(__file__).parent / "migrations"


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA busy_timeout=30000")
    # FULL: a commit is on disk before the call returns. The transfer record must
    # survive a power loss that happens after the payload went out.
    cur.execute("PRAGMA synchronous=FULL")
    # Deleted and overwritten content is zeroed, not left in free space: an erased
    # user's rows must not be readable from the file (broker.flows.erasure).
    cur.execute("PRAGMA secure_delete=ON")
    cur.close()


class _WriteLock:
    """One writer at a time across the threads and processes sharing a SQLite file.

    SQLite lets one connection write at a time; the others wait in its busy handler,
    which sleeps in growing steps (up to 100 ms) and so leaves the lock idle while
    writers sleep. The hot writers (the audit group commit, job claims) queue on this
    lock instead: a thread lock, then ``flock`` on ``<database>-writelock``, which the
    kernel hands to the next waiter the moment it is released."""

    def __init__(self, path: str | None) -> None:
        self._path = path
        self._thread_lock = threading.RLock()
        self._depth = 0
        self._fd: int | None = None

    @contextmanager
    def __call__(self) -> Iterator[None]:
        with self._thread_lock:
            self._depth += 1
            try:
                if self._depth == 1 and self._path is not None:
                    if self._fd is None:
                        self._fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o600)
                    fcntl.flock(self._fd, fcntl.LOCK_EX)
                try:
                    yield
                finally:
                    if self._depth == 1 and self._fd is not None:
                        fcntl.flock(self._fd, fcntl.LOCK_UN)
            finally:
                self._depth -= 1


_WRITE_LOCKS: weakref.WeakKeyDictionary[Engine, _WriteLock] = weakref.WeakKeyDictionary()
_WRITE_LOCKS_GUARD = threading.Lock()


@contextmanager
def write_lock(engine: Engine) -> Iterator[None]:
    """Around a write transaction on a hot path: on SQLite, wait for the write lock
    in line (see ``_WriteLock``); on PostgreSQL nothing (its row locks queue waiters)."""
    if engine.dialect.name != "sqlite" or fcntl is None:
        yield
        return
    with _WRITE_LOCKS_GUARD:
        lock = _WRITE_LOCKS.get(engine)
        if lock is None:
            database = engine.url.database
            in_memory = not database or database == ":memory:" or database.startswith("file:")
            lock = _WRITE_LOCKS[engine] = _WriteLock(None if in_memory else f"{database}-writelock")
    with lock():
        yield


def create_db_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        # A pool as large as the threads that use it at once (API threadpool, delivery
        # workers, audit writer): reopening overflow connections reruns the pragmas.
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": 30},
            pool_size=32,
            max_overflow=32,
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)


def alembic_config(engine: Engine) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(_MIGRATIONS))
    cfg.attributes["engine"] = engine
    return cfg


def schema_revisions(engine: Engine) -> tuple[str | None, str | None]:
    """(the database's revision, the newest this code knows)."""
    head = ScriptDirectory.from_config(alembic_config(engine)).get_current_head()
    with engine.connect() as conn:
        current = MigrationContext.configure(conn).get_current_revision()
    return current, head


def upgrade_schema(engine: Engine, revision: str = "head") -> None:
    command.upgrade(alembic_config(engine), revision)


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    """One transaction: committed on success, rolled back on any error."""
    with Session(engine, expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
