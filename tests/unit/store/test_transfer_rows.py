"""The transfer hot path's queries (broker/store/transfer_rows.py) on a real database:
an outcome is written once, a cancel never touches a held transfer, batch reads
return every connection with its token."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlmodel import Session

from broker.core.statuses import TransferStatus
from broker.runtime import Runtime, build_runtime
from broker.store.models import Connection, ConnectionToken, Transfer
from broker.store.transfer_rows import (
    OUTCOME_COLUMNS,
    cancel_unstarted,
    connection_row,
    connection_rows,
    get_transfer,
    insert_transfer,
    link_and_grant,
    record_outcome,
    transfer_by_key,
    transfer_with_connection,
    unstarted_ids,
)

NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)


@pytest.fixture
def rt(make_settings) -> Iterator[Runtime]:
    runtime = build_runtime(make_settings(), plugins=[], upgrade=True)
    yield runtime
    runtime.close()


def _connection(rt: Runtime, cid: str, *, token: bool) -> None:
    with Session(rt.engine) as session:
        session.add(
            Connection(id=cid, user_id="u1", connector_id="sandbox", status="active", settings={})
        )
        session.flush()
        if token:
            session.add(
                ConnectionToken(
                    connection_id=cid, key_id="k1", access_token="sealed", updated_at=NOW
                )
            )
        session.commit()


def _transfer(rt: Runtime, tid: str, *, cid: str = "cn_1", **values: object) -> None:
    row = Transfer(  # type: ignore[call-arg]
        id=tid,
        connection_id=cid,
        user_id="u1",
        connector_id="sandbox",
        action="push",
        status=TransferStatus.PENDING,
        legal_basis="consent",
        mode="reject",
        destination="example.com/x",
        created_at=NOW,
        categories=["user.contact.email"],
        field_paths=["email"],
        dropped=[],
        attempts=[],
        data_uses=[],
        **values,
    ).model_dump()
    with rt.engine.begin() as db:
        insert_transfer(
            db,
            row=row,
            categories=[{"transfer_id": tid, "category": "user.contact.email", "created_at": NOW}],
        )


def _outcome(status: str) -> dict[str, object]:
    values: dict[str, object] = dict.fromkeys(OUTCOME_COLUMNS)
    values.update(status=status, attempts=[], completed_at=NOW)
    return values


def test_an_outcome_is_written_once_and_a_late_one_sees_the_first(rt: Runtime) -> None:
    _connection(rt, "cn_1", token=True)
    _transfer(rt, "tr_1", lease_owner="w1")
    with rt.engine.begin() as db:
        assert (
            record_outcome(db, transfer_id="tr_1", owner="w2", values=_outcome("failed"))[1]
            is False
        )
        stored, won = record_outcome(
            db, transfer_id="tr_1", owner="w1", values=_outcome(TransferStatus.DELIVERED)
        )
        assert won and stored.status == TransferStatus.DELIVERED and stored.lease_owner is None
        late, won = record_outcome(db, transfer_id="tr_1", owner=None, values=_outcome("failed"))
    assert not won and late.status == TransferStatus.DELIVERED


def test_a_cancel_leaves_a_held_transfer_alone(rt: Runtime) -> None:
    _connection(rt, "cn_1", token=False)
    _transfer(rt, "tr_free", next_attempt_at=NOW)
    _transfer(rt, "tr_held", lease_owner="w1", lease_until=NOW + timedelta(minutes=1))
    with Session(rt.engine) as session:
        assert unstarted_ids(session, connection_id="cn_1") == ["tr_free"]
        assert not cancel_unstarted(session, transfer_id="tr_held", now=NOW, reason="r")
        assert cancel_unstarted(session, transfer_id="tr_free", now=NOW, reason="r")
        assert not cancel_unstarted(session, transfer_id="tr_free", now=NOW, reason="r")
        session.commit()
        free = get_transfer(session, transfer_id="tr_free", fresh=True)
        held = get_transfer(session, transfer_id="tr_held", fresh=True)
    assert free is not None and free.status == TransferStatus.CANCELLED
    assert free.payload_sealed is None
    assert held is not None and held.status == TransferStatus.PENDING


def test_reads_join_the_connection_and_its_token(rt: Runtime) -> None:
    _connection(rt, "cn_1", token=True)
    _connection(rt, "cn_2", token=False)
    _transfer(rt, "tr_1", idempotency_key="k-1")
    with rt.engine.connect() as db:
        rows = connection_rows(db, connection_ids={"cn_1", "cn_2", "cn_gone"})
        one = connection_row(db, connection_id="cn_1")
        t, link = transfer_with_connection(db, transfer_id="tr_1")
        assert transfer_with_connection(db, transfer_id="tr_none") == (None, None)
        found = link_and_grant(db, connection_id="cn_1")
        assert link_and_grant(db, connection_id="cn_gone") is None
    assert set(rows) == {"cn_1", "cn_2"}
    assert rows["cn_1"].token is not None and rows["cn_1"].token.access_token == "sealed"
    assert rows["cn_2"].token is None and rows["cn_2"].status == "active"
    assert one == rows["cn_1"]
    assert t is not None and t.id == "tr_1" and link == rows["cn_1"]
    assert found is not None and found[:4] == ("cn_1", "u1", "sandbox", "active")
    with Session(rt.engine) as session:
        again = transfer_by_key(session, connection_id="cn_1", key="k-1")
        assert transfer_by_key(session, connection_id="cn_2", key="k-1") is None
    assert again is not None and again.id == "tr_1"
