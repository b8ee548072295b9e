"""Transfer filter latency with and without migration 0007's page-order indexes.

Builds the same SQLite log of N transfers twice (schema at 0006, then at head),
and times one page (``list_transfers``, 50 rows, newest first) per filter; prints
the median of R repeats for each, and the ratio old/new measured in this run.

    python bench/transfer_filters.py [-n 200000] [--repeats 7]

Bound: this process's CPU and SQLite's page reads (one process, no network).
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import insert, text

from broker.flows.audit import TransferFilter, list_transfers
from broker.settings import Settings
from broker.store.db import create_db_engine, upgrade_schema
from broker.store.models import Transfer

FILTERS = {
    "user": TransferFilter(user_id="user-7"),
    "status": TransferFilter(status="failed"),
    "connector+status": TransferFilter(connector_id="c-3", status="delivered"),
}


class _Rt:  # what list_transfers needs of a runtime
    def __init__(self, engine: object) -> None:
        self.engine = engine


def _build(path: Path, n: int, revision: str) -> object:
    engine = create_db_engine(f"sqlite:///{path}")
    upgrade_schema(engine, revision)
    rnd = random.Random(7)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    statuses = ["delivered"] * 8 + ["failed", "blocked"]
    rows = [
        {
            "id": f"tr_{i:012d}",
            "connection_id": f"cn_{i % 500}",
            "user_id": f"user-{rnd.randrange(500)}",
            "connector_id": f"c-{rnd.randrange(8)}",
            "action": "post",
            "legal_basis": "consent",
            "mode": "reject",
            "status": rnd.choice(statuses),
            "categories": [],
            "field_paths": [],
            "dropped": [],
            "attempts": [],
            "created_at": start + timedelta(seconds=i),
            "runs": 0,
        }
        for i in range(n)
    ]
    with engine.begin() as conn:
        conn.execute(text("PRAGMA foreign_keys=OFF"))
        table = Transfer.__table__  # type: ignore[attr-defined]
        for i in range(0, n, 20000):
            conn.execute(insert(table), rows[i : i + 20000])
    return engine


def _time(engine: object, flt: TransferFilter, repeats: int) -> float:
    rt = _Rt(engine)
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        rows, _ = list_transfers(rt, flt, limit=50)  # type: ignore[arg-type]
        samples.append((time.perf_counter() - started) * 1000)
        assert rows
    return statistics.median(samples)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-n", type=int, default=200_000)
    p.add_argument("--repeats", type=int, default=7)
    args = p.parse_args(argv)
    Settings()  # fail early on a broken environment
    with tempfile.TemporaryDirectory() as tmp:
        old = _build(Path(tmp) / "old.db", args.n, "0006")
        new = _build(Path(tmp) / "new.db", args.n, "head")
        print(f"{args.n} transfers, SQLite, one page of 50, median of {args.repeats}")
        for name, flt in FILTERS.items():
            before, after = _time(old, flt, args.repeats), _time(new, flt, args.repeats)
            print(
                f"  {name:17} 0006 {before:8.2f} ms | 0007 {after:6.2f} ms | {before / after:6.1f}x"
            )
        old.dispose()  # type: ignore[attr-defined]
        new.dispose()  # type: ignore[attr-defined]
    return 0


if __name__ == "__main__":
    sys.exit(main())
