"""Engines, sessions and schema upgrades for SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

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
    cur.close()


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
