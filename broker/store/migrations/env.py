"""Alembic environment: the engine comes from the caller (``broker db upgrade``)."""

from __future__ import annotations

from alembic import context
from sqlmodel import SQLModel

import broker.store.credential_models
import broker.store.idempotency_models
import broker.store.merkle_models
import broker.store.models
import broker.store.subjects
import broker.store.summaries  # noqa: F401  (registers the tables)

config = context.config
target_metadata = SQLModel.metadata


def run_migrations_online() -> None:
    engine = config.attributes["engine"]
    with engine.begin() as connection:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            render_as_batch=connection.dialect.name == "sqlite",
            compare_type=True,
        )
        with context.begin_transaction():
            context.run_migrations()


run_migrations_online()
