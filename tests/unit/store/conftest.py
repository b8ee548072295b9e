"""A migrated database for the store's query functions."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine

from broker.store.db import create_db_engine, upgrade_schema


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    """An engine on a fresh database at the newest schema."""
    db = create_db_engine(database_url)
    upgrade_schema(db)
    yield db
    db.dispose()
