"""Log format 2 and erasure (issue 14 point 3): entries name users by pseudonym and salt
payload digests; `broker users erase` / `DELETE /v1/users/{id}` leave a log that still
verifies, the counts per recipient unchanged, and nothing that links to the person."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from pathlib import Path

import pytest
from sqlalchemy import MetaData, event, select, update
from sqlmodel import Session
from sqlmodel import select as rows_of

from broker.cli import main
from broker.core.pseudonyms import FORMAT_EVENT, is_pseudonym, salted_digest
from broker.core.scope import canonical_payload
from broker.flows.audit import verify_log
from broker.flows.checkpoints import sign_checkpoint
from broker.flows.events import EventFilter, list_events
from broker.flows.log_format import start_format
from broker.store.audit import append_event, iter_entries
from broker.store.db import session_scope
from broker.store.models import AuditRow, Transfer
from broker.store.subjects import LogFormat, SubjectKey
from tests.integration.conftest import Browser, Stack, connect

USER = "zelda.erasable-7"
OTHER = "keep-me-2"
SECRET_NAME = "Zelda Quuxington"  # a payload value: must not survive the erasure anywhere
DATA = {"work_item": {"id": "W-1", "title": "Ship it"}, "author": {"name": SECRET_NAME}}
WORK = {"work_item": {"id": "W-2", "title": "Other work"}}


def share(stack: Stack, connection_id: str, data: dict, **extra: object):
    with stack.api() as api:
        return api.post(
            f"/v1/connections/{connection_id}/transfers",
            json={"action": "post_message", "data": data, **extra},
        )


@pytest.fixture
def shared(stack: Stack, browser: Browser) -> Stack:
    """USER shares a work item and their name (and objects to marketing); OTHER shares
    a work item."""
    mine = connect(stack, browser, optional=["user.name"], user_id=USER)
    assert share(stack, mine, DATA, idempotency_key="k-1").status_code == 201
    with stack.api() as api:
        resp = api.put(f"/v1/users/{USER}/preferences", json={"object_to": ["marketing"]})
    assert resp.status_code == 200, resp.text
    other = connect(stack, browser, optional=[], user_id=OTHER)
    assert share(stack, other, WORK).status_code == 201
    return stack


def _cli_env(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("BROKER_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("BROKER_HOME", str(stack.rt.settings.home))
    monkeypatch.setenv("BROKER_DATABASE_URL", stack.rt.settings.resolved_database_url)


def _every_value(stack: Stack) -> str:
    """Every value of every table of the broker's database, as text."""
    meta = MetaData()
    meta.reflect(stack.rt.engine)
    parts = []
    with stack.rt.engine.connect() as conn:
        for table in meta.sorted_tables:
            for row in conn.execute(select(table)):
                parts.append(repr(tuple(row)))
    return "\n".join(parts)


def test_entries_name_users_by_pseudonym_and_salt_the_payload_digest(shared: Stack) -> None:
    rt = shared.rt
    entries = [e for e in iter_entries(rt.engine) if e.user_id is not None]
    assert entries and all(is_pseudonym(e.user_id) for e in entries)
    assert not any(USER in json.dumps(e.to_dict()) for e in entries)
    with Session(rt.engine) as session:
        key = session.get(SubjectKey, USER)
        t = session.exec(rows_of(Transfer).where(Transfer.user_id == USER)).one()
    assert key is not None
    expected = hmac.new(key.subject_key, USER.encode(), hashlib.sha256).hexdigest()
    assert key.pseudonym == expected
    granted = [e for e in entries if e.event == "consent.granted" and e.user_id == expected]
    assert granted and granted[0].actor == "user:" + expected
    body = canonical_payload(DATA)
    assert t.payload_sha256 == salted_digest(t.payload_salt, body)
    assert t.payload_sha256 != hashlib.sha256(body).hexdigest()
    pending = [e for e in entries if e.event == "transfer.pending" and e.transfer_id == t.id]
    assert pending[0].payload_sha256 == t.payload_sha256
    # the same payload under the same key is a replay; another payload a conflict
    assert share(shared, t.connection_id, DATA, idempotency_key="k-1").status_code == 200
    assert share(shared, t.connection_id, WORK, idempotency_key="k-1").status_code == 409
    # filtering by the clear id finds the pseudonymous entries, shown with the id
    items, _ = list_events(rt, EventFilter(user_id=USER), limit=500)
    assert {i["event"] for i in items} >= {"consent.granted", "transfer.pending"}
    assert {i["user_id"] for i in items} == {USER}


def test_erasure_leaves_a_verifiable_log_that_links_to_nobody(
    shared: Stack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    rt = shared.rt
    with shared.api(shared.auditor_key) as api:
        before = api.get("/v1/audit/recipients").json()["recipients"]
        assert before
        assert api.get(f"/v1/users/{USER}/disclosures").json()["disclosures"]
    with shared.api() as api:
        resp = api.delete(f"/v1/users/{USER}")
    assert resp.status_code == 200, resp.text
    erased = resp.json()
    assert erased["status"] == "erased" and len(erased["revoked"]) == 1
    name = erased["pseudonym"]
    assert is_pseudonym(name) and erased["counts"]["transfers"] == 1
    # the revocation went through the revoke flow, then the erasure entry names no one
    events = [e for e in iter_entries(rt.engine) if e.user_id == name]
    assert [e.event for e in events][-3:] == [
        "consent.withdrawn",
        "connection.revoked",
        "subject.erased",
    ]
    assert shared.provider.revoked  # revoked at the provider
    with shared.api(shared.auditor_key) as api:
        assert api.get("/v1/audit/recipients").json()["recipients"] == before  # counts stay
        report = api.get(f"/v1/users/{USER}/disclosures")
    assert report.status_code == 200
    assert report.json()["no_data"] is True and report.json()["disclosures"] == []
    with Session(rt.engine) as session:
        assert session.get(SubjectKey, USER) is None
        assert session.get(SubjectKey, OTHER) is not None
    # nothing in any table links to the person or holds the payload value
    everything = _every_value(shared)
    assert USER not in everything and SECRET_NAME not in everything
    assert OTHER in everything  # (the scan does see clear ids)
    # the log still verifies end to end, in the broker and exported
    assert verify_log(rt).ok
    _cli_env(shared, monkeypatch)
    sign_checkpoint(rt)
    assert main(["audit", "verify"]) == 0
    log = tmp_path / "log.jsonl"
    assert main(["audit", "export-log", "-o", str(log)]) == 0
    keys = tmp_path / "keys.txt"
    capsys.readouterr()
    assert main(["audit", "public-key"]) == 0
    keys.write_text(capsys.readouterr().out)
    assert main(["audit", "verify-export", str(log), "--public-key", str(keys)]) == 0
    exported = log.read_bytes()
    assert USER.encode() not in exported and SECRET_NAME.encode() not in exported
    assert name.encode() in exported
    if rt.engine.dialect.name == "sqlite":  # and the database file itself
        rt.engine.dispose()
        db = Path(rt.settings.resolved_database_url.removeprefix("sqlite:///"))
        for path in (db, Path(f"{db}-wal")):
            if path.exists():
                raw = path.read_bytes()
                assert USER.encode() not in raw and SECRET_NAME.encode() not in raw, path


def test_erasure_is_idempotent_and_says_so(
    shared: Stack, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    _cli_env(shared, monkeypatch)
    assert main(["users", "erase", USER]) == 0
    assert "subject key destroyed" in capsys.readouterr().out
    seq = [e.seq for e in iter_entries(shared.rt.engine)][-1]
    assert main(["users", "erase", USER]) == 0
    assert "holds no data of this user" in capsys.readouterr().out
    with shared.api() as api:
        again = api.delete(f"/v1/users/{USER}")
        unknown = api.delete("/v1/users/never-seen")
        bad = api.delete("/v1/users/not%20valid")
        auditor = api.delete(
            f"/v1/users/{OTHER}", headers={"Authorization": f"Bearer {shared.auditor_key}"}
        )
    assert again.status_code == unknown.status_code == 200
    assert again.json()["status"] == unknown.json()["status"] == "nothing_held"
    assert bad.status_code == 422 and bad.json()["error"]["code"] == "invalid_input"
    assert auditor.status_code == 403 and "error" in auditor.json()
    assert [e.seq for e in iter_entries(shared.rt.engine)][-1] == seq  # nothing appended


def test_a_format_1_log_gets_a_handover_entry_once(stack: Stack) -> None:
    rt = stack.rt
    with session_scope(rt.engine) as session:  # a format-1 log: clear entries, no handover
        append_event(session, head_file=None, time=rt.clock(), event="key.rotated", actor="cli")
        session.execute(update(LogFormat).values(first_seq=None))
    size = [e.seq for e in iter_entries(rt.engine)][-1]
    root = sign_checkpoint(rt).root_hash
    seq = start_format(rt)
    assert seq == size + 1 and start_format(rt) is None  # once
    entry = next(iter(iter_entries(rt.engine, after=size)))
    assert entry.event == FORMAT_EVENT
    assert entry.details["format"] == 2
    assert entry.details["previous"] == {"format": 1, "size": size, "root": root}
    with Session(rt.engine) as session:
        assert session.get(LogFormat, 2).first_seq == seq
        assert session.exec(rows_of(AuditRow.seq)).all()  # nothing rewritten
    assert verify_log(rt).ok


def test_a_user_already_seen_costs_no_statement_on_the_hot_path(shared: Stack) -> None:
    """Pseudonyms are cached per process: sharing again for a known user reads no key."""
    rt = shared.rt
    with Session(rt.engine) as session:
        connection_id = session.exec(
            rows_of(Transfer.connection_id).where(Transfer.user_id == USER)
        ).first()
    seen: list[str] = []

    def record(conn, cursor, statement, *args) -> None:
        seen.append(statement)

    event.listen(rt.engine, "before_cursor_execute", record)
    try:
        assert share(shared, connection_id, WORK).status_code == 201
    finally:
        event.remove(rt.engine, "before_cursor_execute", record)
    assert any("audit_log" in s for s in seen)  # the entries were written meanwhile
    assert not [s for s in seen if "subject_keys" in s]
