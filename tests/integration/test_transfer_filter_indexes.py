"""Migrations 0007 and 0014: transfer filters read their matches in page order.

A filter on a user, a status, a connector and status, or a category used to find
its matches through a single-column index (the category: an ``IN`` list of every
transfer id in it) and then sort all of them (a temporary B-tree); each composite
index ends in the page order, so a page reads only the rows it shows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest
from sqlalchemy import insert, inspect, text
from sqlmodel import Session, col, select

from broker.flows.audit import TransferFilter, list_transfers
from broker.store.db import create_db_engine, upgrade_schema
from broker.store.models import Transfer, TransferCategory

INDEXES = {
    "ix_transfers_user_page": ["user_id", "created_at", "id"],
    "ix_transfers_connector_status_page": ["connector_id", "status", "created_at", "id"],
    "ix_transfers_status_page": ["status", "created_at", "id"],
}


def _indexes(engine: object) -> dict[str, list[str]]:
    return {ix["name"]: list(ix["column_names"]) for ix in inspect(engine).get_indexes("transfers")}


def test_the_migration_adds_the_page_order_indexes_to_an_existing_database(
    database_url: str,
) -> None:
    engine = create_db_engine(database_url)
    try:
        upgrade_schema(engine, "0006")
        assert not set(INDEXES) & set(_indexes(engine))
        upgrade_schema(engine)
        found = _indexes(engine)
        for name, columns in INDEXES.items():
            assert found.get(name) == columns, name
    finally:
        engine.dispose()


@pytest.mark.parametrize(
    ("flt", "index"),
    [
        (TransferFilter(user_id="u1"), "ix_transfers_user_page"),
        (
            TransferFilter(connector_id="c1", status="delivered"),
            "ix_transfers_connector_status_page",
        ),
        (TransferFilter(status="failed"), "ix_transfers_status_page"),
        (TransferFilter(connector_id="c1"), "ix_transfers_connector_page"),  # 0020
        (TransferFilter(category="user.name"), "ix_transfer_categories_page"),
    ],
)
def test_a_filtered_page_needs_no_sort_on_sqlite(
    tmp_path: Path, flt: TransferFilter, index: str
) -> None:
    engine = create_db_engine(f"sqlite:///{tmp_path / 'plan.db'}")
    try:
        upgrade_schema(engine)
        created, tid = flt.page_keys  # what ``list_transfers`` orders by
        stmt = flt.apply(select(Transfer)).order_by(col(created).desc(), col(tid).desc()).limit(51)
        sql = str(stmt.compile(engine, compile_kwargs={"literal_binds": True}))
        with engine.connect() as conn:
            plan = " | ".join(row[-1] for row in conn.execute(text("EXPLAIN QUERY PLAN " + sql)))
        assert index in plan, plan
        assert "TEMP B-TREE" not in plan, plan
    finally:
        engine.dispose()


def _seed(engine: object, n: int, *, with_created: bool) -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    transfers = Transfer.__table__  # type: ignore[attr-defined]
    categories = TransferCategory.__table__  # type: ignore[attr-defined]
    rows = [
        {
            "id": f"tr_{i:04d}",
            "connection_id": "cn_1",
            "user_id": "u1",
            "connector_id": "c1",
            "action": "post",
            "legal_basis": "consent",
            "mode": "reject",
            "status": "delivered",
            "categories": ["user.name"] if i % 2 else ["user.contact.email"],
            "field_paths": [],
            "dropped": [],
            "attempts": [],
            "created_at": start + timedelta(seconds=i // 2),  # pairs share a time
            "runs": 0,
        }
        for i in range(n)
    ]
    cats = [
        {"transfer_id": r["id"], "category": r["categories"][0]}
        | ({"created_at": r["created_at"]} if with_created else {})
        for r in rows
    ]
    with engine.begin() as conn:  # type: ignore[attr-defined]
        if conn.dialect.name == "sqlite":
            conn.execute(text("PRAGMA foreign_keys=OFF"))  # no connection rows here
        else:
            conn.execute(text("SET session_replication_role = replica"))
        conn.execute(insert(transfers), rows)
        conn.execute(insert(categories), cats)


def test_0014_fills_in_the_category_times_of_existing_transfers(database_url: str) -> None:
    engine = create_db_engine(database_url)
    try:
        upgrade_schema(engine, "0013")
        _seed(engine, 6, with_created=False)
        upgrade_schema(engine)
        indexes = {
            ix["name"]: ix["column_names"]
            for ix in inspect(engine).get_indexes("transfer_categories")
        }
        assert indexes["ix_transfer_categories_page"] == ["category", "created_at", "transfer_id"]
        with Session(engine) as db:
            got = {c.transfer_id: c.created_at for c in db.exec(select(TransferCategory))}
            want = {t.id: t.created_at for t in db.exec(select(Transfer))}
        assert got == want and len(got) == 6
    finally:
        engine.dispose()


def test_a_category_pages_newest_first_through_ties_and_cursors(database_url: str) -> None:
    engine = create_db_engine(database_url)
    try:
        upgrade_schema(engine)
        _seed(engine, 40, with_created=True)
        rt = SimpleNamespace(engine=engine)
        flt = TransferFilter(category="user.name")
        seen, cursor = [], None
        while True:
            rows, cursor = list_transfers(rt, flt, cursor=cursor, limit=3)  # type: ignore[arg-type]
            seen += [r["id"] for r in rows]
            if cursor is None:
                break
        expected = sorted((f"tr_{i:04d}" for i in range(1, 40, 2)), reverse=True)
        assert seen == expected  # every match once, newest first, none of another category
    finally:
        engine.dispose()


def test_a_transfers_log_entries_are_read_by_index_on_sqlite(tmp_path: Path) -> None:
    """Migration 0020: the console's transfer page reads its entries without a scan."""
    engine = create_db_engine(f"sqlite:///{tmp_path / 'entries.db'}")
    try:
        upgrade_schema(engine)
        sql = "SELECT seq FROM audit_log WHERE transfer_id = 'tr_1' ORDER BY seq"
        with engine.connect() as conn:
            plan = " | ".join(row[-1] for row in conn.execute(text("EXPLAIN QUERY PLAN " + sql)))
        assert "ix_audit_log_transfer" in plan, plan
        assert "TEMP B-TREE" not in plan, plan
    finally:
        engine.dispose()
