"""Reading the audit log for verification: rows by seq range, streamed, as column tuples.

A Core statement, not ORM objects: the same column types (so the same Python values as
``iter_entries``), without building a model per row. On PostgreSQL the rows are Core rows
read through a server-side cursor (``stream_results``); on SQLite, where none of these
columns has a result processor, the driver's own tuples (its cursor streams anyway; a
Core ``Row`` per entry would cost about a tenth of the whole check). Each range is read
in one transaction, so it sees one snapshot.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

from sqlalchemy import Engine, Text, cast, func, select

from broker.core.audit_chain import GENESIS_HASH, WINDOW, ChainState
from broker.core.chain_scan import ROW_FIELDS
from broker.store.models import AuditRow

__all__ = ["chain_state", "hash_at", "iter_rows", "last_seq"]

_T = AuditRow.__table__  # type: ignore[attr-defined]
_JSON = ("categories", "field_paths", "details")
# The JSON columns as their stored text: ``scan_range`` parses them (and caches the
# lists, which repeat); SQLAlchemy's and psycopg's JSON loaders are json.loads too.
_COLUMNS = [cast(_T.c[name], Text) if name in _JSON else _T.c[name] for name in ROW_FIELDS]


def iter_rows(
    engine: Engine, start: int, end: int, *, batch: int = 5000
) -> Generator[Any, None, None]:
    """Rows with ``start <= seq <= end`` in seq order, columns in ``ROW_FIELDS`` order
    (the JSON columns as text)."""
    stmt = select(*_COLUMNS).where(_T.c.seq >= start, _T.c.seq <= end).order_by(_T.c.seq)
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            # No column here has a result processor on SQLite: the driver's tuples are
            # what Core rows would hold, without building a Row per entry.
            compiled = stmt.compile(dialect=engine.dialect)
            params = [compiled.params[name] for name in compiled.positiontup or ()]
            cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
            try:
                cursor.execute(str(compiled), params)
                while part := cursor.fetchmany(batch):
                    yield from part
            finally:
                cursor.close()
            return
        result = conn.execution_options(stream_results=True, yield_per=batch).execute(stmt)
        for part in result.partitions():
            yield from part


def last_seq(engine: Engine) -> int:
    """The largest seq stored (0 for an empty log): one index lookup."""
    with engine.connect() as conn:
        top = conn.execute(select(func.max(_T.c.seq))).scalar()
    return int(top or 0)


def chain_state(engine: Engine, seq: int) -> ChainState:
    """The state of a pass that accepted entries ``1 .. seq`` as stored (see
    ``ChainState``): read the last ``WINDOW`` hashes; ``seq`` must be 0 or an entry."""
    if seq == 0:
        return ChainState(0, GENESIS_HASH, GENESIS_HASH, (GENESIS_HASH,))
    low = max(1, seq - WINDOW + 1)
    with engine.connect() as conn:
        rows = conn.execute(
            select(_T.c.seq, _T.c.hash, _T.c.prev_hash)
            .where(_T.c.seq >= low, _T.c.seq <= seq)
            .order_by(_T.c.seq)
        ).all()
    hashes = [h for _s, h, _p in rows]
    if low == 1:
        hashes.insert(0, GENESIS_HASH)
    return ChainState(seq, rows[-1][1], rows[-1][2], tuple(hashes[-WINDOW:]))


def hash_at(engine: Engine, seq: int) -> str | None:
    """The stored hash of entry ``seq`` (None if there is no such row)."""
    with engine.connect() as conn:
        return conn.execute(select(_T.c.hash).where(_T.c.seq == seq)).scalar()
