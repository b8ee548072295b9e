"""The recipient summary (issue 13.2): kept with each outcome, equal to a recount of the
transfers, checked and rebuilt by ``broker audit summary``, filled by migration 0016."""

from __future__ import annotations

import json
import random
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

from sqlalchemy import event, insert, text
from sqlmodel import Session, select

from broker.cli import main
from broker.core.statuses import FINAL_TRANSFER_STATUSES
from broker.flows.activity import daily_transfers
from broker.flows.audit import recipients_report
from broker.flows.summaries import check_summary, read_summary
from broker.settings import Settings
from broker.store.audit_writer import Event, audit_writer
from broker.store.db import create_db_engine, upgrade_schema
from broker.store.models import Transfer
from broker.store.summaries import Outcome, RecipientSummary
from tests.integration.conftest import Browser, Stack, connect
from tests.integration.test_cli import _transfer, env, rt  # noqa: F401  (fixtures)

WORK = {"work_item": {"id": "W-1", "title": "Ship it"}}
NAMED = {**WORK, "author": {"name": "Ann"}}
EMAIL = {**WORK, "to": {"email": "b@example.com"}}  # a declined category: blocked


def _naive_recount(engine) -> dict:
    """The summary as an auditor would count it by hand, one transfer at a time."""
    out: dict = {}
    with Session(engine) as db:
        for t in db.exec(select(Transfer)).all():
            if t.status not in FINAL_TRANSFER_STATUSES:
                continue
            items = [("transfer", ""), ("day", t.created_at.astimezone(UTC).date().isoformat())]
            items += [("category", c) for c in set(t.categories)]
            items += [("field", p) for p in set(t.field_paths)]
            for kind, item in items:
                n, first, last = out.get((t.connector_id, t.status, kind, item), (0, None, None))
                first = t.created_at if first is None else min(first, t.created_at)
                last = t.created_at if last is None else max(last, t.created_at)
                out[(t.connector_id, t.status, kind, item)] = [n + 1, first, last]
    return out


def _stored(engine) -> dict:
    with engine.connect() as conn:
        return read_summary(conn)


def _share(stack: Stack, connection_id: str, data: dict) -> int:
    with stack.api() as api:
        resp = api.post(
            f"/v1/connections/{connection_id}/transfers",
            json={"action": "post_message", "data": data},
        )
    return resp.status_code


def test_the_summary_equals_a_recount_after_random_transfers(
    stack: Stack, browser: Browser
) -> None:
    one = connect(stack, browser, optional=["user.name"], user_id="user-1")
    two = connect(stack, browser, optional=[], user_id="user-2")
    rng = random.Random(1302)
    # Concurrent requests, so the writer commits several outcomes in one batch (some
    # with the same key: one upsert row adds them up); a few runs fail for good.
    plan = [(rng.choice([one, two]), rng.choice([WORK, NAMED, EMAIL])) for _ in range(24)]
    with ThreadPoolExecutor(6) as pool:
        codes = list(pool.map(lambda p: _share(stack, *p), plan))
    stack.provider.fail_api(503, count=2 * stack.rt.settings.delivery_max_attempts)
    codes += [_share(stack, one, WORK), _share(stack, two, WORK)]
    assert {201, 403, 502} <= set(codes)  # delivered, blocked and failed all happened
    stored = _stored(stack.rt.engine)
    assert stored == _naive_recount(stack.rt.engine)
    assert {s for (_c, s, _k, _i) in stored} == {"delivered", "blocked", "failed"}
    assert check_summary(stack.rt.engine).ok
    # The report reads the summary and says what the transfers say.
    (sandbox,) = [r for r in recipients_report(stack.rt) if r["connector"] == "sandbox"]
    assert sandbox["transfers"] == codes.count(201)
    assert sandbox["blocked"] == codes.count(403) and sandbox["failed"] == codes.count(502)
    assert ("sandbox", "delivered", "field", "author.name") in stored
    assert "author.name" in sandbox["field_paths"]


def test_a_cancelled_transfer_is_counted_in_its_transaction(env: Settings, rt) -> None:  # noqa: F811
    from broker.flows.cancel import cancel_transfer

    created = datetime.now(UTC)
    queued = _transfer(rt, status="pending", created=created)
    assert _stored(rt.engine) == {}  # a pending transfer is not counted
    assert cancel_transfer(rt, queued.id, actor="test").status == "cancelled"
    stored = _stored(rt.engine)
    assert stored[("example", "cancelled", "transfer", "")] == [1, created, created]
    assert stored == _naive_recount(rt.engine)


def test_one_upsert_per_batch_and_none_without_outcomes(rt) -> None:  # noqa: F811
    writer = audit_writer(rt.engine, head_file=None)
    seen: list[tuple[str, bool]] = []

    def listen(_conn, _cursor, statement, _params, _context, executemany) -> None:
        if "recipient_summaries" in statement:
            seen.append((statement, executemany))

    at = datetime(2026, 12, 1, tzinfo=UTC)
    outcome = Outcome("example", "delivered", ["user.name"], ["author.name"], at)
    plain = Event(time=at, event="transfer.pending", actor="test", fields={})
    event.listen(rt.engine, "before_cursor_execute", listen)
    try:
        writer.run(lambda conn: ([plain], None))
        assert seen == []  # a batch without outcomes costs no statement
        later = outcome._replace(created_at=at + timedelta(hours=1))
        events = [
            Event(time=at, event="transfer.delivered", actor="test", fields={}, summary=o)
            for o in (outcome, later, outcome)
        ]
        writer.run(lambda conn: (events, None))
    finally:
        event.remove(rt.engine, "before_cursor_execute", listen)
    assert len(seen) == 1 and "ON CONFLICT" in seen[0][0].upper()
    stored = _stored(rt.engine)
    assert stored[("example", "delivered", "transfer", "")] == [3, at, at + timedelta(hours=1)]
    assert stored[("example", "delivered", "field", "author.name")][0] == 3


def test_rebuild_check_catches_a_tampered_row(env: Settings, rt, capsys) -> None:  # noqa: F811
    now = datetime.now(UTC)
    for status in ("delivered", "delivered", "failed", "blocked"):
        _transfer(rt, status=status, created=now)  # written around the hot path
    assert main(["audit", "summary", "--check"]) == 1  # rows the transfers give are missing
    assert "example delivered transfer: stored missing" in capsys.readouterr().out
    assert main(["audit", "summary", "--rebuild"]) == 0
    capsys.readouterr()
    assert main(["audit", "summary", "--check", "--json"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["ok"] is True and err == ""  # no progress with --json
    with rt.engine.begin() as conn:
        conn.execute(
            text(
                "UPDATE recipient_summaries SET transfers = transfers + 5 "
                "WHERE connector_id = 'example' AND status = 'delivered' AND kind = 'category'"
            )
        )
    assert main(["audit", "summary", "--rebuild", "--check", "--json"]) == 1
    result = json.loads(capsys.readouterr().out)
    (diff,) = result["differences"]
    assert (diff["status"], diff["kind"], diff["item"]) == ("delivered", "category", "user.name")
    assert (diff["stored"]["transfers"], diff["expected"]["transfers"]) == (7, 2)
    assert result["rebuilt"] is True
    assert main(["audit", "summary", "--check"]) == 0  # the rebuild put it right
    assert "summary matches (4 transfers" in capsys.readouterr().out
    assert main(["audit", "summary", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["recipients"]
    assert [(r["status"], r["transfers"]) for r in rows] == [
        ("blocked", 1), ("delivered", 2), ("failed", 1),
    ]  # fmt: skip


def test_rebuild_shows_its_progress(env: Settings, rt, capsys) -> None:  # noqa: F811
    _transfer(rt, status="delivered", created=datetime.now(UTC))
    assert main(["audit", "summary", "--rebuild"]) == 0
    err = capsys.readouterr().err
    assert "summary --rebuild: 1/1 transfers (100%)" in err


def _seed(engine, rows: list[dict]) -> None:
    transfers = Transfer.__table__  # type: ignore[attr-defined]
    with engine.begin() as conn:
        if conn.dialect.name == "sqlite":
            conn.execute(text("PRAGMA foreign_keys=OFF"))  # no connection rows here
        else:
            conn.execute(text("SET session_replication_role = replica"))
        conn.execute(insert(transfers), rows)


def _figures(r: dict) -> tuple:
    return (r["connector"], r["transfers"], r["failed"], r["blocked"], r["first_at"],
            r["last_at"], r["categories"], r["field_paths"])  # fmt: skip


def _figures_from_transfers(engine) -> list[tuple]:
    """The recipients report as it was computed before the summary, from every transfer."""
    with Session(engine) as db:
        rows = db.exec(select(Transfer)).all()
    out = []
    for c in sorted({t.connector_id for t in rows}):
        mine = [t for t in rows if t.connector_id == c]
        sent = [t for t in mine if t.status in ("delivered", "outcome_unknown")]
        delivered = [t.created_at for t in mine if t.status == "delivered"]
        out.append((
            c, len(delivered), sum(t.status == "failed" for t in mine),
            sum(t.status == "blocked" for t in mine), min(delivered, default=None),
            max(delivered, default=None), sorted({x for t in sent for x in t.categories}),
            sorted({x for t in sent for x in t.field_paths}),
        ))  # fmt: skip
    return out


def _chart_from_transfers(engine, status: str, days: list) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    with Session(engine) as db:
        for t in db.exec(select(Transfer).where(Transfer.status == status)).all():
            day = t.created_at.astimezone(UTC).date()
            if day in days:
                out.setdefault(t.connector_id, [0] * len(days))[days.index(day)] += 1
    return dict(sorted(out.items()))


def _without_days(summary: dict) -> dict:
    return {k: v for k, v in summary.items() if k[2] != "day"}


def test_migrations_0016_and_0021_fill_the_summary_from_existing_transfers(
    database_url: str,
) -> None:
    engine = create_db_engine(database_url)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    statuses = ["delivered", "failed", "blocked", "outcome_unknown", "pending", "cancelled"]
    rows = [
        {
            "id": f"tr_{i:04d}", "connection_id": "cn_1", "user_id": "u1",
            "connector_id": f"c{i % 2}", "action": "post", "legal_basis": "consent",
            "mode": "reject", "status": statuses[i % len(statuses)],
            "categories": ["user.name"] if i % 3 else ["user.name", "user.contact.email"],
            "field_paths": ["author.name", "author.name"] if i % 4 else [],
            "dropped": [], "attempts": [], "created_at": start + timedelta(hours=7 * i), "runs": 0,
        }
        for i in range(60)
    ]  # fmt: skip
    rows[-1] |= {"connector_id": "c-pending-only", "status": "pending"}
    try:
        upgrade_schema(engine, "0015")
        _seed(engine, rows)
        upgrade_schema(engine, "0016")
        assert _stored(engine) == _without_days(_naive_recount(engine))
        upgrade_schema(engine, "0021")  # the days, from the transfers' UTC dates
        stored = _stored(engine)
        assert stored == _naive_recount(engine)
        assert len({i for (_c, _s, k, i) in stored if k == "day"}) > 10
        assert not any(s == "pending" for (_c, s, _k, _i) in stored)
        assert stored[("c0", "delivered", "transfer", "")][0] == 10
        # The charts read the day rows and count what the transfers count.
        now = SimpleNamespace(engine=engine, clock=lambda: start + timedelta(days=20))
        for status in ("delivered", "failed", "blocked"):
            series = daily_transfers(now, days=30, status=status)  # type: ignore[arg-type]
            assert _chart_from_transfers(engine, status, series.days) == series.counts
        assert check_summary(engine).ok
        # The report from the summary gives what it gave from the transfers.
        report = recipients_report(SimpleNamespace(engine=engine))  # type: ignore[arg-type]
        assert [_figures(r) for r in report] == _figures_from_transfers(engine)
    finally:
        engine.dispose()


def test_the_migration_creates_what_the_model_declares(rt) -> None:  # noqa: F811
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext
    from sqlmodel import SQLModel

    assert RecipientSummary.__tablename__ in SQLModel.metadata.tables
    with rt.engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        diffs = [d for d in compare_metadata(ctx, SQLModel.metadata) if "recipient_" in repr(d)]
    assert diffs == []
