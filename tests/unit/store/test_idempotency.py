"""Queries of idempotency keys: one row per (principal, route, key); old ones deleted."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine
from sqlmodel import Session

from broker.store.db import session_scope
from broker.store.idempotency import delete_keys_before, find_idempotency_key
from broker.store.idempotency_models import IdempotencyKey

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _key(key: str, *, route: str = "POST /v1/x", at: datetime = T0) -> IdempotencyKey:
    return IdempotencyKey(
        principal="p", route=route, key=key, request_sha256="0" * 64, created_at=at
    )


def test_found_by_principal_route_and_key(engine: Engine) -> None:
    with session_scope(engine) as session:
        session.add(_key("k1"))
        session.add(_key("k1", route="POST /v1/y"))
    with Session(engine) as session:
        found = find_idempotency_key(session, principal="p", route="POST /v1/y", key="k1")
        assert found is not None and found.route == "POST /v1/y"
        assert find_idempotency_key(session, principal="q", route="POST /v1/x", key="k1") is None
        assert find_idempotency_key(session, principal="p", route="POST /v1/x", key="k2") is None


def test_keys_created_before_the_cutoff_are_deleted(engine: Engine) -> None:
    with session_scope(engine) as session:
        session.add(_key("old", at=T0 - timedelta(seconds=1)))
        session.add(_key("edge", at=T0))
    with session_scope(engine) as session:
        delete_keys_before(session, cutoff=T0)
    with Session(engine) as session:
        assert find_idempotency_key(session, principal="p", route="POST /v1/x", key="old") is None
        assert find_idempotency_key(session, principal="p", route="POST /v1/x", key="edge")
