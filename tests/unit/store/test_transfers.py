"""broker.store.transfers: page order and bounds, counts, the reconciliation reads."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import Engine
from sqlmodel import Session, select

from broker.store import transfers as store
from broker.store.models import Transfer, TransferCategory

from .conftest import T0, connection, transfer


def _add(engine: Engine, *rows: object) -> None:
    with Session(engine) as session:
        session.add(connection("cn_1"))
        session.add(connection("cn_2", user_id="u2"))
        session.flush()
        for row in rows:
            session.add(row)
        session.commit()


def test_a_page_is_newest_first_one_extra_row_and_strictly_after_the_cursor(
    engine: Engine,
) -> None:
    # two rows at the same time: the id breaks the tie, as the cursor does
    _add(engine, transfer("tr_a", minutes=1), transfer("tr_b", minutes=1), transfer("tr_c"))
    with Session(engine) as session:
        first = store.transfer_page(session, select(Transfer), after=None, limit=2)
        assert [t.id for t in first] == ["tr_b", "tr_a", "tr_c"]  # limit + 1: more to come
        after = (first[1].created_at, first[1].id)
        rest = store.transfer_page(session, select(Transfer), after=after, limit=2)
        assert [t.id for t in rest] == ["tr_c"]


def test_a_page_keeps_the_callers_filter(engine: Engine) -> None:
    _add(engine, transfer("tr_a"), transfer("tr_b", connection_id="cn_2", user_id="u2"))
    with Session(engine) as session:
        stmt = select(Transfer).where(Transfer.user_id == "u2")
        assert [t.id for t in store.transfer_page(session, stmt, after=None, limit=5)] == ["tr_b"]


def test_conditions_narrow_pages_and_counts_alike(engine: Engine) -> None:
    _add(
        engine,
        transfer("tr_a"),
        transfer("tr_b", minutes=10, categories=["user.email"]),
        transfer("tr_c", minutes=20, status="failed", connection_id="cn_2", user_id="u2"),
        TransferCategory(
            transfer_id="tr_b", category="user.email", created_at=T0 + timedelta(minutes=10)
        ),
    )
    cases: list[tuple[dict[str, Any], list[str]]] = [
        ({}, ["tr_c", "tr_b", "tr_a"]),
        ({"user_id": "u1"}, ["tr_b", "tr_a"]),
        ({"connection_id": "cn_2"}, ["tr_c"]),
        ({"status": "failed"}, ["tr_c"]),
        ({"connector_id": "c9"}, []),
        ({"since": T0 + timedelta(minutes=10)}, ["tr_c", "tr_b"]),  # since: inclusive
        ({"until": T0 + timedelta(minutes=10)}, ["tr_a"]),  # until: exclusive
        ({"category": "user.email"}, ["tr_b"]),
    ]
    with Session(engine) as session:
        for conditions, expected in cases:
            stmt = store.matching_query(**conditions)
            keys = store.page_keys(category=conditions.get("category"))
            page = store.transfer_page(session, stmt, after=None, limit=10, keys=keys)
            assert [t.id for t in page] == expected, conditions
            assert store.count_matching(session, **conditions) == len(expected), conditions
    assert store.page_keys(category="user.email")[0] is TransferCategory.created_at


def test_status_and_activity_counts(engine: Engine) -> None:
    _add(
        engine,
        transfer("tr_a"),
        transfer("tr_b", minutes=5),
        transfer("tr_c", status="failed", connection_id="cn_2", user_id="u2"),
    )
    with Session(engine) as session:
        assert store.status_counts(session) == {"delivered": 2, "failed": 1}
        rows = store.activity_counts(session, connection_ids=["cn_1"])
    assert len(rows) == 1
    connection_id, status, n, last = rows[0]
    assert (connection_id, status, n) == ("cn_1", "delivered", 2)
    assert last.replace(tzinfo=None) == (T0 + timedelta(minutes=5)).replace(tzinfo=None)


def test_disclosures_are_delivered_or_unknown_oldest_first(engine: Engine) -> None:
    _add(
        engine,
        transfer("tr_late", minutes=2, purpose="p", data_uses=["essential"]),
        transfer("tr_early", status="outcome_unknown"),
        transfer("tr_blocked", status="blocked"),
        transfer("tr_other", connection_id="cn_2", user_id="u2"),
    )
    with Session(engine) as session:
        mine = store.disclosed_to_user(session, user_id="u1")
        assert [t.id for t in mine] == ["tr_early", "tr_late"]
        declared = store.disclosed_declarations(session, connector_ids=["c1"])
    assert sorted(declared, key=lambda d: d[1] or "") == [
        ("c1", None, None, ["user.name"]),
        ("c1", None, None, ["user.name"]),
        ("c1", "p", ["essential"], ["user.name"]),
    ]


def test_lapsed_and_unleased_pending_and_the_pre_engine_lease(engine: Engine) -> None:
    _add(
        engine,
        transfer("tr_lapsed", status="pending", lease_owner="w", lease_until=T0),
        transfer("tr_held", status="pending", lease_owner="w", lease_until=T0 + timedelta(1)),
        transfer("tr_old", status="pending"),
        transfer("tr_new", status="pending", minutes=60),
        transfer("tr_done"),
    )
    now = T0 + timedelta(minutes=1)
    with Session(engine) as session:
        assert [t.id for t in store.lapsed_pending(session, now=now)] == ["tr_lapsed"]
        old = store.unleased_pending(session, created_before=now)
        assert [t.id for t in old] == ["tr_old"]
        store.mark_pre_engine(session, transfer_ids=["tr_old", "tr_held"], until=T0)
        session.commit()
        assert [t.id for t in store.unleased_pending(session, created_before=now)] == []
        held = session.get(Transfer, "tr_held")
        assert held is not None and held.lease_owner == "w"  # only unleased rows are marked
        assert [t.id for t in store.lapsed_pending(session, now=now)] == ["tr_lapsed", "tr_old"]
