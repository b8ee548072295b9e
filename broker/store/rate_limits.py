"""A ``limits`` storage over the broker's own database, for several broker processes.

``limits`` ships storages for memory, Redis, Memcached and MongoDB, none over SQL.
This one implements what its fixed-window strategy needs (``incr``, ``get``,
``get_expiry``) on the ``rate_limit_counters`` table: one row per key with a count
and the epoch second its window ends. ``incr`` is one atomic upsert (``INSERT … ON
CONFLICT DO UPDATE … RETURNING``, on SQLite ≥ 3.35 and PostgreSQL), so processes
that share the database share the counters. The clock is injected for tests.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from limits.storage import Storage
from sqlalchemy import Engine, case, delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import SQLAlchemyError

from broker.store.models import RateLimitCounter

__all__ = ["DatabaseStorage"]

_TABLE = RateLimitCounter.__table__  # type: ignore[attr-defined]


class DatabaseStorage(Storage):
    """Fixed-window counters in ``rate_limit_counters``."""

    STORAGE_SCHEME = ["broker-database"]

    def __init__(self, engine: Engine, *, clock: Callable[[], float] = time.time) -> None:
        super().__init__(None)
        self._engine = engine
        self._clock = clock

    @property
    def base_exceptions(self) -> type[Exception] | tuple[type[Exception], ...]:
        return SQLAlchemyError

    def incr(self, key: str, expiry: float, amount: int = 1) -> int:
        now = self._clock()
        insert = postgresql.insert if self._engine.dialect.name == "postgresql" else sqlite.insert
        stmt = insert(_TABLE).values(key=key, count=amount, expires_at=now + expiry)
        expired = _TABLE.c.expires_at <= now
        upsert = stmt.on_conflict_do_update(
            index_elements=[_TABLE.c.key],
            set_={
                "count": case((expired, amount), else_=_TABLE.c.count + amount),
                "expires_at": case((expired, now + expiry), else_=_TABLE.c.expires_at),
            },
        ).returning(_TABLE.c.count)
        with self._engine.begin() as conn:
            return int(conn.execute(upsert).scalar_one())

    def _row(self, key: str) -> tuple[int, float] | None:
        with self._engine.connect() as conn:
            row = conn.execute(
                select(_TABLE.c.count, _TABLE.c.expires_at).where(_TABLE.c.key == key)
            ).first()
        if row is None or row.expires_at <= self._clock():
            return None
        # row[0]: the count column (to a type checker row.count is the tuple's count method)
        return int(row[0]), float(row.expires_at)

    def get(self, key: str) -> int:
        row = self._row(key)
        return row[0] if row else 0

    def get_expiry(self, key: str) -> float:
        row = self._row(key)
        return row[1] if row else self._clock()

    def check(self) -> bool:
        try:
            with self._engine.connect() as conn:
                conn.execute(select(1))
        except SQLAlchemyError:
            return False
        return True

    def reset(self) -> int | None:
        with self._engine.begin() as conn:
            return conn.execute(delete(_TABLE)).rowcount

    def clear(self, key: str) -> None:
        with self._engine.begin() as conn:
            conn.execute(delete(_TABLE).where(_TABLE.c.key == key))

    def purge(self) -> int:
        """Delete counters whose window has ended."""
        with self._engine.begin() as conn:
            return conn.execute(delete(_TABLE).where(_TABLE.c.expires_at <= self._clock())).rowcount
