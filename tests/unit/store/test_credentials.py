"""Queries of tenants' OAuth credentials: found per (connector, tenant), paged newest
first, counted against the connections still using them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine
from sqlmodel import Session

from broker.store.credential_models import ConnectorCredential
from broker.store.credentials import (
    all_credentials_for_update,
    count_connections_using,
    credentials_page,
    find_credentials,
)
from broker.store.db import session_scope
from broker.store.models import Connection

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _credential(
    row_id: str, tenant: str, at: datetime, connector_id: str = "demo"
) -> ConnectorCredential:
    return ConnectorCredential(
        id=row_id,
        connector_id=connector_id,
        tenant=tenant,
        client_id="client",
        client_secret="sealed",
        created_at=at,
        updated_at=at,
    )


def test_found_per_connector_and_tenant_and_paged_newest_first(engine: Engine) -> None:
    with session_scope(engine) as session:
        session.add(_credential("occ_a", "t1", T0))
        session.add(_credential("occ_b", "t2", T0))  # same time: the larger id first
        session.add(_credential("occ_c", "t3", T0 + timedelta(seconds=1)))
        session.add(_credential("occ_x", "t1", T0, connector_id="other"))
    with Session(engine) as session:
        found = find_credentials(session, connector_id="demo", tenant="t1")
        assert found is not None and found.id == "occ_a"
        assert find_credentials(session, connector_id="demo", tenant="t9") is None
        first = credentials_page(session, connector_id="demo", before=None, limit=2)
        assert [r.id for r in first] == ["occ_c", "occ_b"]
        last = first[-1]
        rest = credentials_page(
            session, connector_id="demo", before=(last.created_at, last.id), limit=2
        )
        assert [r.id for r in rest] == ["occ_a"]
        assert {r.id for r in all_credentials_for_update(session)} == {
            "occ_a",
            "occ_b",
            "occ_c",
            "occ_x",
        }


def test_connections_using_a_tenant_are_counted_by_status(engine: Engine) -> None:
    with session_scope(engine) as session:
        for n, (tenant, status) in enumerate(
            [("t1", "active"), ("t1", "revoked"), ("t1", "error"), ("t2", "active")]
        ):
            session.add(
                Connection(
                    id=f"con_{n}", user_id="u", connector_id="demo", status=status, tenant=tenant
                )
            )
    with Session(engine) as session:
        count = count_connections_using(
            session, connector_id="demo", tenant="t1", statuses=("active", "error")
        )
        assert count == 2
        assert (
            count_connections_using(session, connector_id="other", tenant="t1", statuses=["active"])
            == 0
        )
