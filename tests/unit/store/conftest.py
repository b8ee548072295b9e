"""A migrated database (SQLite, or PostgreSQL when BROKER_TEST_DATABASE_URL is set) and
small builders of rows, for the store's query functions."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine

from broker.store.db import create_db_engine, upgrade_schema
from broker.store.models import AuditRow, Connection, ConsentRecord, Transfer

T0 = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = create_db_engine(database_url)
    upgrade_schema(engine)
    try:
        yield engine
    finally:
        engine.dispose()


def connection(cid: str, **values: Any) -> Connection:
    fields: dict[str, Any] = {"user_id": "u1", "connector_id": "c1", "status": "active"}
    return Connection(id=cid, **{**fields, **values})


def consent(rid: str, connection_id: str, **values: Any) -> ConsentRecord:
    fields: dict[str, Any] = {
        "user_id": "u1",
        "connector_id": "c1",
        "connector_name": "C One",
        "granted_categories": ["user.name"],
        "declined_categories": [],
        "purposes": {},
        "privacy_policy_url": "https://c1.example/privacy",
        "terms_url": "https://c1.example/terms",
        "manifest_digest": "0" * 64,
        "platform_policy_version": "1",
        "scopes": [],
        "consented_at": T0,
        "recorded_at": T0,
    }
    return ConsentRecord(id=rid, connection_id=connection_id, **{**fields, **values})


def transfer(tid: str, *, minutes: int = 0, **values: Any) -> Transfer:
    fields: dict[str, Any] = {
        "connection_id": "cn_1",
        "user_id": "u1",
        "connector_id": "c1",
        "action": "post",
        "status": "delivered",
        "categories": ["user.name"],
        "field_paths": [],
        "dropped": [],
        "attempts": [],
        "created_at": T0 + timedelta(minutes=minutes),
    }
    return Transfer(id=tid, **{**fields, **values})


def entry(seq: int, event: str, **values: Any) -> AuditRow:
    fields: dict[str, Any] = {
        "time": f"2026-01-01T00:00:{seq:02d}.000000Z",
        "categories": [],
        "field_paths": [],
        "details": {},
        "prev_hash": "0" * 64,
        "hash": f"{seq:064d}",
    }
    return AuditRow(seq=seq, event=event, **{**fields, **values})
