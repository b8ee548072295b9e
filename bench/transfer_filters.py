"""Transfer filter latency with and without the page-order indexes (migrations 0007, 0014).

Builds the same SQLite log of N transfers twice, both at head: once without the
page-order indexes of 0007 and 0014 (and with the category filter as it was before
0014: ``id IN`` every transfer id of the category, ordered by the transfers' own
columns), once as migrated; times one page (``list_transfers``, 50 rows, newest
first) per filter; prints the median of R repeats for each, and the ratio
baseline/head measured in this run.

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
from sqlmodel import col, select

from broker.flows.audit import TransferFilter, list_transfers
from broker.flows.paging import page
from broker.settings import Settings
from broker.store.db import create_db_engine, upgrade_schema
from broker.store.models import Transfer, TransferCategory

FILTERS = {
    "user": TransferFilter(user_id="user-7"),
    "status": TransferFilter(status="failed"),
    "connector+status": TransferFilter(connector_id="c-3", status="delivered"),
    "category": TransferFilter(category="cat-2"),
}


class _Rt:  # what list_transfers needs of a runtime
    def __init__(self, engine: object) -> None:
        self.engine = engine


PAGE_INDEXES = (
    "ix_transfers_user_page",
    "ix_transfers_connector_status_page",
    "ix_transfers_status_page",
    "ix_transfer_categories_page",
)


def _build(path: Path, n: int, *, indexed: bool) -> object:
    engine = create_db_engine(f"sqlite:///{path}")
    upgrade_schema(engine)
    if not indexed:
        with engine.begin() as conn:
            for name in PAGE_INDEXES:
                conn.execute(text(f"DROP INDEX {name}"))
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
    for r in rows:  # one category each, of 8
        r["categories"] = [f"cat-{rnd.randrange(8)}"]
    cats = [
        {"transfer_id": r["id"], "category": r["categories"][0], "created_at": r["created_at"]}
        for r in rows
    ]
    with engine.begin() as conn:
        conn.execute(text("PRAGMA foreign_keys=OFF"))
        table = Transfer.__table__  # type: ignore[attr-defined]
        categories = TransferCategory.__table__  # type: ignore[attr-defined]
        for i in range(0, n, 20000):
            conn.execute(insert(table), rows[i : i + 20000])
            conn.execute(insert(categories), cats[i : i + 20000])
    return engine


def _before_0014(engine: object, flt: TransferFilter) -> list[dict[str, object]]:
    """The category filter as it was: an IN list, ordered by the transfers' columns."""
    sub = select(TransferCategory.transfer_id).where(TransferCategory.category == flt.category)
    stmt = select(Transfer).where(col(Transfer.id).in_(sub))
    return page(engine, stmt, cursor=None, limit=50)[0]  # type: ignore[arg-type]


def _time(engine: object, flt: TransferFilter, repeats: int, *, old: bool) -> float:
    rt = _Rt(engine)
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        if old and flt.category:
            rows = _before_0014(engine, flt)
        else:
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
        old = _build(Path(tmp) / "old.db", args.n, indexed=False)
        new = _build(Path(tmp) / "new.db", args.n, indexed=True)
        print(f"{args.n} transfers, SQLite, one page of 50, median of {args.repeats}")
        for name, flt in FILTERS.items():
            before = _time(old, flt, args.repeats, old=True)
            after = _time(new, flt, args.repeats, old=False)
            print(
                f"  {name:17} without {before:8.2f} ms | head {after:6.2f} ms"
                f" | {before / after:6.1f}x"
            )
        old.dispose()  # type: ignore[attr-defined]
        new.dispose()  # type: ignore[attr-defined]
    return 0


if __name__ == "__main__":
    sys.exit(main())
