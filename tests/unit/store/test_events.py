"""broker.store.events: the log read newest first in pages, and the entries reports use."""

from __future__ import annotations

from sqlalchemy import Engine
from sqlmodel import Session, select

from broker.store import events as store
from broker.store.models import AuditRow

from .conftest import entry


def _add(engine: Engine, *rows: AuditRow) -> None:
    with Session(engine) as session:
        for row in rows:
            session.add(row)
        session.commit()


def test_a_page_of_entries_is_newest_first_and_before_the_cursor(engine: Engine) -> None:
    _add(engine, *(entry(seq, "transfer.delivered") for seq in range(1, 6)))
    with Session(engine) as session:
        page = store.entry_page(session, select(AuditRow), before_seq=None, limit=2)
        assert [r.seq for r in page] == [5, 4, 3]
        page = store.entry_page(session, select(AuditRow), before_seq=3, limit=2)
        assert [r.seq for r in page] == [2, 1]
        only = select(AuditRow).where(AuditRow.seq == 4)
        assert [r.seq for r in store.entry_page(session, only, before_seq=4, limit=2)] == []


def test_names_and_a_transfers_entries(engine: Engine) -> None:
    _add(
        engine,
        entry(1, "transfer.pending", transfer_id="tr_1"),
        entry(2, "transfer.blocked", transfer_id="tr_2", details={"outside": [{"path": "x"}]}),
        entry(3, "transfer.delivered", transfer_id="tr_1"),
    )
    with Session(engine) as session:
        assert store.event_names(session) == [
            "transfer.blocked",
            "transfer.delivered",
            "transfer.pending",
        ]
        assert [r.seq for r in store.transfer_entries(session, transfer_id="tr_1")] == [1, 3]
        blocked = store.blocked_details(session, transfer_ids=["tr_1", "tr_2"])
    assert blocked == [("tr_2", {"outside": [{"path": "x"}]})]


def test_legal_disclosures_and_objections_of_a_user(engine: Engine) -> None:
    _add(
        engine,
        entry(1, "disclosure.legal", user_id="u1"),
        entry(2, "preference.objected", user_id="u1"),
        entry(3, "disclosure.legal", user_id="u2"),
        entry(4, "preference.withdrawn", user_id="u1"),
        entry(5, "preference.objected", user_id="u2"),
        entry(6, "consent.granted", user_id="u1"),
    )
    with Session(engine) as session:
        assert [r.seq for r in store.legal_disclosures(session)] == [1, 3]
        assert [r.seq for r in store.legal_disclosures(session, user_id="u2")] == [3]
        assert [r.seq for r in store.objections(session, user_id="u1")] == [2, 4]
