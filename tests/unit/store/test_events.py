"""broker.store.events: the log read newest first in pages, and the entries reports use."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine
from sqlmodel import Session

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
        page = store.entry_page(session, before_seq=None, limit=2)
        assert [r.seq for r in page] == [5, 4, 3]
        page = store.entry_page(session, before_seq=3, limit=2)
        assert [r.seq for r in page] == [2, 1]


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


def test_conditions_narrow_a_page_of_entries(engine: Engine) -> None:
    _add(
        engine,
        entry(1, "policy.changed", connector_id="c1"),
        entry(2, "policy.classified", connector_id="c2"),
        entry(3, "policy_x", transfer_id="tr_1"),  # not in the group "policy."
        entry(4, "consent.granted", user_id="u1"),
    )
    cases: list[tuple[dict[str, Any], list[int]]] = [
        ({"event": "policy."}, [2, 1]),
        ({"event": "policy.changed"}, [1]),
        ({"event": "policy%"}, []),  # the group is a prefix, not a pattern
        ({"connector_id": "c2"}, [2]),
        ({"transfer_id": "tr_1"}, [3]),
        ({"user_id": "u1"}, [4]),
        ({"since": "2026-01-01T00:00:02.000000Z"}, [4, 3, 2]),  # since: inclusive
        ({"until": "2026-01-01T00:00:02.000000Z"}, [1]),  # until: exclusive
    ]
    with Session(engine) as session:
        for conditions, expected in cases:
            page = store.entry_page(session, before_seq=None, limit=10, **conditions)
            assert [r.seq for r in page] == expected, conditions
