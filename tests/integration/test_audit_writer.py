"""The group-commit audit writer: many callers, one chain, a failing unit fails alone."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import pytest
from sqlalchemy import text
from sqlmodel import Session, func, select

from broker.flows.audit import verify_log
from broker.runtime import build_runtime
from broker.store.audit import append_event
from broker.store.audit_writer import AuditWriter, Event
from broker.store.db import session_scope
from broker.store.models import AuditRow


@pytest.fixture
def rt(make_settings):
    runtime = build_runtime(make_settings(), builtins=[], plugins=[], upgrade=True)
    yield runtime
    runtime.close()


def _event(n: int) -> Event:
    return Event(
        time=datetime.now(UTC),
        event="key.rotated",
        actor=f"test:{n}",
        fields={"details": {"n": n}},
    )


def test_concurrent_units_make_one_chain_and_a_failing_unit_fails_alone(rt) -> None:
    writer = AuditWriter(rt.engine, head_file=rt.settings.audit_head_file)

    def unit_for(n: int):
        def unit(conn):
            if n == 77:
                conn.execute(text("SELECT no_such_column FROM audit_log"))
            return [_event(n)], n

        return unit

    def call(n: int) -> object:
        try:
            return writer.run(unit_for(n))
        except Exception as exc:
            return exc

    with ThreadPoolExecutor(max_workers=16) as pool:
        results = list(pool.map(call, range(200)))
    failed = [i for i, r in enumerate(results) if isinstance(r, Exception)]
    assert failed == [77]
    assert [r for r in results if not isinstance(r, Exception)] == [
        n for n in range(200) if n != 77
    ]
    with Session(rt.engine) as db:
        actors = db.exec(select(AuditRow.actor).order_by(AuditRow.seq)).all()
    assert sorted(actors) == sorted(f"test:{n}" for n in range(200) if n != 77)
    assert writer.entries == 199 and writer.batches <= 199
    assert verify_log(rt).ok  # chain, tree and head agree


def test_writer_and_per_transaction_appends_interleave_without_forking(rt) -> None:
    writer = AuditWriter(rt.engine, head_file=rt.settings.audit_head_file)

    def by_writer(n: int) -> None:
        writer.run(lambda conn: ([_event(n)], None))

    def by_session(n: int) -> None:
        with session_scope(rt.engine) as session:
            append_event(
                session,
                head_file=rt.settings.audit_head_file,
                time=datetime.now(UTC),
                event="key.rotated",
                actor=f"test:{n}",
            )

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(lambda n: (by_writer if n % 2 else by_session)(n), range(80)))
    with Session(rt.engine) as db:
        assert db.exec(select(func.count()).select_from(AuditRow)).one() == 80
    assert verify_log(rt).ok
