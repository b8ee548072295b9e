"""Migration 0007: transfer filters read their matches in page order.

A filter on a user, a status, or a connector and status used to find its
matches through a single-column index and then sort all of them (a temporary
B-tree); each composite index ends in the page order, so a page reads only
the rows it shows."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import inspect, text
from sqlmodel import col, select

from broker.flows.audit import TransferFilter
from broker.store.db import create_db_engine, upgrade_schema
from broker.store.models import Transfer

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
    ],
)
def test_a_filtered_page_needs_no_sort_on_sqlite(
    tmp_path: Path, flt: TransferFilter, index: str
) -> None:
    engine = create_db_engine(f"sqlite:///{tmp_path / 'plan.db'}")
    try:
        upgrade_schema(engine)
        stmt = (
            flt.apply(select(Transfer))
            .order_by(col(Transfer.created_at).desc(), col(Transfer.id).desc())
            .limit(51)
        )
        sql = str(stmt.compile(engine, compile_kwargs={"literal_binds": True}))
        with engine.connect() as conn:
            plan = " | ".join(row[-1] for row in conn.execute(text("EXPLAIN QUERY PLAN " + sql)))
        assert index in plan, plan
        assert "TEMP B-TREE" not in plan, plan
    finally:
        engine.dispose()
