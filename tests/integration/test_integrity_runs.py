"""Incremental verification from the last verified position, full re-verification as a
background run kept as an audit event, and what the API answers (issue 13, point 3).

What an incremental run guarantees (docs/auditors.md): entries appended since the last
verified position are checked at once; an entry verified before is re-read only by a
full run, except the last verified entry, whose hash must not have changed."""

from __future__ import annotations

from sqlalchemy import text
from sqlmodel import Session, select

import broker.flows.integrity as integrity
from broker.flows.integrity import integrity_status, start_full, wait_for
from broker.runtime import Runtime
from broker.store.models import AuditRow
from broker.store.verification_models import AuditVerification
from tests.integration import test_verify_ranges
from tests.integration.conftest import Stack
from tests.integration.test_verify_ranges import fill, rehash, sql

rt = test_verify_ranges.rt  # the same fixture: a runtime on a fresh database


def status(rt: Runtime) -> dict:
    return integrity_status(rt, actor="test")


def test_the_first_check_is_full_then_only_new_entries_are_verified(rt: Runtime) -> None:
    fill(rt, 10)
    first = status(rt)["last"]
    assert (first["kind"], first["ok"], first["from_seq"], first["to_seq"]) == ("full", True, 0, 10)
    again = status(rt)["last"]
    assert again["id"] == first["id"]  # nothing new: nothing verified, the same answer
    fill(rt, 5)
    later = status(rt)
    run = later["last"]
    assert (run["kind"], run["ok"], run["from_seq"], run["to_seq"]) == ("incremental", True, 10, 15)
    assert run["checked"] == 15 and later["unverified"] == 0 and later["running"] is None
    assert run["finished_at"] is not None and run["duration_ms"] is not None


def test_a_new_entry_changed_is_caught_at_once(rt: Runtime) -> None:
    fill(rt, 10)
    assert status(rt)["last"]["ok"]
    fill(rt, 5)
    sql(rt, "UPDATE audit_log SET purpose = 'resold' WHERE seq = 13")
    run = status(rt)["last"]
    assert (run["ok"], run["problem"], run["first_bad_seq"]) == (False, "modified", 13)
    fill(rt, 2)  # a failed result stays the answer until a full run succeeds
    assert status(rt)["last"]["id"] == run["id"]


def test_an_old_entry_changed_is_caught_only_by_a_full_run(rt: Runtime) -> None:
    fill(rt, 10)
    assert status(rt)["last"]["ok"]
    sql(rt, "UPDATE audit_log SET purpose = 'resold' WHERE seq = 3")
    fill(rt, 3)
    run = status(rt)["last"]
    assert (run["kind"], run["ok"], run["to_seq"]) == ("incremental", True, 13)  # documented
    full = start_full(rt, actor="auditor-key")
    done = wait_for(rt, full.id, timeout=60)
    assert (done.kind, done.status, done.ok, done.problem, done.first_bad_seq) == (
        "full", "done", False, "modified", 3,
    )  # fmt: skip
    assert status(rt)["last"]["id"] == full.id
    with Session(rt.engine) as session:
        event = session.exec(select(AuditRow).where(AuditRow.event == "audit.verified")).one()
    assert event.actor == "auditor-key" and event.outcome == "failed"
    assert event.details["verification_id"] == full.id
    assert (event.details["ok"], event.details["first_bad_seq"]) == (False, 3)


def test_the_last_verified_entry_rehashed_is_caught_incrementally(rt: Runtime) -> None:
    fill(rt, 10)
    assert status(rt)["last"]["ok"]
    rehash(rt, 10, purpose="resold")  # and every later entry would follow it
    fill(rt, 1)
    run = status(rt)["last"]
    assert (run["ok"], run["problem"], run["first_bad_seq"]) == (False, "forked", 10)


def test_a_truncated_verified_part_is_caught_incrementally(rt: Runtime) -> None:
    fill(rt, 10)
    assert status(rt)["last"]["ok"]
    sql(rt, "DELETE FROM audit_log WHERE seq >= 8")
    run = status(rt)["last"]
    assert (run["ok"], run["problem"]) == (False, "truncated")


def test_a_full_run_that_succeeds_becomes_the_position(rt: Runtime) -> None:
    fill(rt, 6)
    run = wait_for(rt, start_full(rt, actor="a").id, timeout=60)
    assert (run.ok, run.to_seq, run.from_seq) == (True, 6, 0)
    later = status(rt)["last"]  # the audit.verified event (entry 7) is new: verified now
    assert (later["kind"], later["from_seq"], later["to_seq"], later["ok"]) == (
        "incremental", 6, 7, True,
    )  # fmt: skip


def test_a_large_backlog_is_verified_in_the_background(rt: Runtime, monkeypatch) -> None:
    fill(rt, 4)
    first = status(rt)["last"]
    monkeypatch.setattr(integrity, "SYNC_LIMIT", 3)
    fill(rt, 5)
    answer = status(rt)
    assert answer["last"]["id"] == first["id"]  # not verified in the request
    with Session(rt.engine) as session:
        run = session.exec(select(AuditVerification).order_by(AuditVerification.id.desc())).first()
    assert run.id != first["id"] and run.kind == "incremental"
    done = wait_for(rt, run.id, timeout=60)
    assert (done.ok, done.from_seq, done.to_seq) == (True, 4, 9)


def test_a_run_that_raises_records_a_stable_word_and_the_type_never_the_text(
    rt: Runtime, monkeypatch, caplog
) -> None:
    fill(rt, 3)
    secret = "row 2: purpose='internal detail'"

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError(secret)

    monkeypatch.setattr(integrity, "check_log", broken)
    run = wait_for(rt, start_full(rt, actor="a").id, timeout=60)
    assert (run.ok, run.problem) == (False, "error")
    assert run.message == "the verification could not be carried out (RuntimeError)"
    with Session(rt.engine) as session:
        event = session.exec(select(AuditRow).order_by(AuditRow.seq.desc())).first()
    assert event.event == "audit.verified" and secret not in str(event.details)
    assert secret in caplog.text  # the operator log has it


def test_the_api_answers_from_the_last_verification_and_starts_a_full_run(stack: Stack) -> None:
    fill(stack.rt, 5)
    with stack.api(stack.auditor_key) as api:
        body = api.get("/v1/audit/verify").json()
        assert body["ok"] is True and body["verification"]["kind"] == "full"
        assert body["head"] == body["chain_head"] and body["running"] is None
        assert body["verification"]["finished_at"].endswith("Z") and body["unverified"] == 0
        with stack.rt.engine.begin() as conn:
            conn.execute(text("UPDATE audit_log SET actor = 'x' WHERE seq = 1"))
        assert api.get("/v1/audit/verify").json()["ok"] is True  # verified before
        started = api.post("/v1/audit/verifications")
        assert started.status_code == 202
        location = started.headers["location"]
        run_id = started.json()["id"]
        assert location == f"/v1/audit/verifications/{run_id}"
        wait_for(stack.rt, run_id, timeout=60)
        run = api.get(location).json()
        assert (run["status"], run["ok"], run["first_bad_seq"], run["problem"]) == (
            "done", False, 1, "modified",
        )  # fmt: skip
        body = api.get("/v1/audit/verify").json()
        assert (body["ok"], body["first_bad_seq"], body["verification"]["id"]) == (False, 1, run_id)
        missing = api.get("/v1/audit/verifications/999999")
        assert missing.status_code == 404 and missing.json()["error"]["code"]


def test_new_entries_rewritten_with_their_chain_are_caught_by_a_later_checkpoint(
    rt: Runtime,
) -> None:
    from broker.core.audit_chain import ChainHead, write_head
    from broker.flows.checkpoints import sign_checkpoint

    fill(rt, 10)
    assert status(rt)["last"]["ok"]
    fill(rt, 5)
    sign_checkpoint(rt)  # of size 15
    prev = None
    for seq in range(12, 16):  # the chain recomputed, the head too: only the tree shows it
        prev = rehash(rt, seq, prev=prev, purpose=f"rewritten {seq}")
    sql(rt, "UPDATE audit_head SET hash = :h WHERE id = 1", h=prev)
    write_head(rt.settings.audit_head_file, ChainHead(15, prev))
    run = status(rt)["last"]
    assert (run["kind"], run["ok"], run["problem"]) == ("incremental", False, "modified")
    assert "checkpoint of size 15" in run["message"]


def test_old_incremental_runs_are_forgotten(rt: Runtime, monkeypatch) -> None:
    monkeypatch.setattr(integrity, "KEEP_INCREMENTAL", 2)
    fill(rt, 2)
    full = status(rt)["last"]
    for _ in range(4):
        fill(rt, 1)
        status(rt)
    with Session(rt.engine) as session:
        runs = session.exec(select(AuditVerification).order_by(AuditVerification.id)).all()
    assert [r.kind for r in runs] == ["full", "incremental", "incremental"]
    assert runs[0].id == full["id"] and runs[-1].to_seq == 6


def test_the_page_follows_a_running_full_verification(stack: Stack, browser, monkeypatch) -> None:
    """While a full run is in progress the page shows its progress and refreshes itself
    (no script); once it is done, its result, and no more refreshing."""
    import re
    import threading

    from tests.integration.test_audit_console import sign_in

    fill(stack.rt, 3)
    sign_in(browser, stack)
    page = browser.get(f"{stack.url}/audit/integrity").text
    assert "<strong>Intact.</strong>" in page and 'http-equiv="refresh"' not in page
    release, reported = threading.Event(), threading.Event()
    real = integrity.check_log

    def held(rt, **kw):
        kw["progress"](2, 4)  # the run reports progress, then waits to be released
        reported.set()
        assert release.wait(60)
        return real(rt, **kw)

    monkeypatch.setattr(integrity, "check_log", held)
    csrf = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
    assert (
        browser.post(f"{stack.url}/audit/integrity/verify", data={"csrf": csrf}).status_code == 303
    )
    assert reported.wait(60)  # the background run has reported its progress
    running = browser.get(f"{stack.url}/audit/integrity?started=1").text
    assert '<meta http-equiv="refresh" content="2">' in running
    assert "Full verification in progress:</strong>" in running
    assert "2 of 4 entries (50%)" in running
    assert "disabled>Verify the whole log again" in running
    again = browser.post(f"{stack.url}/audit/integrity/verify", data={"csrf": csrf})
    assert again.status_code == 303  # one is running: nothing new is started
    with Session(stack.rt.engine) as session:
        runs = session.exec(select(AuditVerification).where(AuditVerification.kind == "full")).all()
    release.set()
    assert wait_for(stack.rt, runs[-1].id, timeout=60).ok
    done = browser.get(f"{stack.url}/audit/integrity?started=1").text
    assert 'http-equiv="refresh"' not in done and "The full verification finished" in done
    assert len(runs) == 2  # the first check (in the request) and the one started here
