"""The `broker` command against a real database (SQLite, or PostgreSQL when set)."""

from __future__ import annotations

import csv
import io
import json
import os
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlmodel import Session, select

from broker.cli import main
from broker.core.audit_chain import read_head
from broker.core.tokens import new_secret
from broker.flows.keys import authenticate
from broker.runtime import Runtime, build_runtime
from broker.settings import Settings
from broker.store.audit import append_event, flush_head_files
from broker.store.db import session_scope
from broker.store.models import AuditRow, Connection, ConnectionToken, Transfer

GOOD_MANIFEST = """
id = "example"
name = "Example Chat"
privacy_policy_url = "https://example.com/privacy"
terms_url = "https://example.com/terms"
[oauth]
authorize_url = "https://example.com/oauth/authorize"
token_url = "https://example.com/oauth/token"
scopes = ["messages:write"]
client_id = "env:EXAMPLE_CLIENT_ID"
client_secret = "env:EXAMPLE_CLIENT_SECRET"
[[data]]
category = "user.content.work_items"
purpose = "Post work item updates to a channel"
[[actions]]
name = "post_message"
url = "https://api.example.com/messages"
"""


@pytest.fixture
def env(tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch) -> Settings:
    for name in list(os.environ):
        if name.startswith("BROKER_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("BROKER_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("BROKER_DATABASE_URL", database_url)
    assert main(["db", "upgrade"]) == 0
    return Settings()


@pytest.fixture
def rt(env: Settings) -> Runtime:
    runtime = build_runtime(env, plugins=[])
    yield runtime
    runtime.close()


def test_create_key_prints_it_once_and_stores_a_hash(env, rt, capsys) -> None:
    assert main(["admin", "create-key", "--role", "auditor"]) == 0
    out = capsys.readouterr()
    key = out.out.strip()
    assert key.startswith("brk_")
    assert "shown once" in out.err
    assert authenticate(rt.engine, key).role == "auditor"
    with rt.engine.connect() as conn:
        stored = [r[0] for r in conn.execute(text("SELECT key_hash FROM api_keys"))]
    assert key not in stored and len(stored) == 1


def test_create_key_refuses_unknown_role(env, capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["admin", "create-key", "--role", "root"])
    assert exc.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


def test_connectors_check_and_list(env, tmp_path, monkeypatch, capsys) -> None:
    good = tmp_path / "good.toml"
    good.write_text(GOOD_MANIFEST)
    bad = tmp_path / "bad.toml"
    bad.write_text(
        GOOD_MANIFEST.replace('client_secret = "env:EXAMPLE_CLIENT_SECRET"', 'client_secret = "s3"')
        .replace("https://example.com/oauth/token", "http://example.com/oauth/token")
        .replace("user.content.work_items", "user.nope")
    )
    assert main(["connectors", "check", str(good)]) == 0
    assert "ok — example" in capsys.readouterr().out
    assert main(["connectors", "check", str(bad)]) == 1
    err = capsys.readouterr().err
    assert str(bad) in err
    assert "oauth.client_secret: must be a reference like 'env:" in err
    assert "oauth.token_url: 'http://example.com/oauth/token' uses http" in err
    assert "data[0].category: 'user.nope' is not in the catalog" in err
    dup = tmp_path / "dup.toml"
    dup.write_text(GOOD_MANIFEST)
    monkeypatch.setenv("BROKER_CONNECTORS_PATH", str(tmp_path))
    assert main(["connectors", "list", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    # the file's connector, then the ones this distribution publishes (entry points)
    ids = [c["id"] for c in listed["connectors"]]
    assert ids == ["example", "github", "google-calendar", "slack", "zendesk"]
    messages = {p["source"]: p["message"] for p in listed["problems"]}
    assert "invalid manifest" in messages[str(bad)]
    assert any("duplicate connector id 'example'" in m for m in messages.values())
    # operators see which connectors cannot be offered (users never see the variables)
    slack = next(c for c in listed["connectors"] if c["id"] == "slack")
    assert slack["callback_url"].endswith("/oauth/callback/slack")
    monkeypatch.delenv("SLACK_CLIENT_ID", raising=False)
    assert main(["connectors", "list"]) == 0
    out = capsys.readouterr().out
    assert "not offered to users" in out and "SLACK_CLIENT_ID" in out


def _append(rt: Runtime, n: int) -> None:
    for i in range(n):
        with session_scope(rt.engine) as session:
            append_event(
                session,
                head_file=rt.settings.audit_head_file,
                time=datetime.now(UTC),
                event="transfer.delivered",
                actor="test",
                user_id=f"u{i}",
                connector_id="example",
                categories=["user.name"],
                field_paths=["author.name"],
                details={"i": i},
            )


def test_audit_verify_intact_then_tampered(env, rt, capsys) -> None:
    _append(rt, 6)
    flush_head_files()
    assert read_head(rt.settings.audit_head_file).seq == 6
    assert main(["audit", "verify"]) == 0
    assert "6 entries verified" in capsys.readouterr().out
    with rt.engine.begin() as conn:
        conn.execute(text("UPDATE audit_log SET user_id = 'someone-else' WHERE seq = 3"))
    assert main(["audit", "verify", "--json"]) == 1
    result = json.loads(capsys.readouterr().out)
    assert (result["first_bad_seq"], result["problem"]) == (3, "modified")


def test_audit_verify_detects_deleted_and_truncated(env, rt, capsys) -> None:
    _append(rt, 6)
    with rt.engine.begin() as conn:
        conn.execute(text("DELETE FROM audit_log WHERE seq = 4"))
    assert main(["audit", "verify"]) == 1
    assert "seq 4: deleted" in capsys.readouterr().out
    with rt.engine.begin() as conn:
        conn.execute(text("DELETE FROM audit_log WHERE seq >= 4"))
    assert main(["audit", "verify"]) == 1
    assert "truncated" in capsys.readouterr().out


def _transfer(rt: Runtime, *, status: str, created: datetime) -> Transfer:
    with session_scope(rt.engine) as session:
        conn = session.get(Connection, "conn_1")
        if conn is None:
            session.add(
                Connection(id="conn_1", user_id="u1", connector_id="example", status="active")
            )
            session.flush()
        t = Transfer(
            id="tr_" + new_secret(nbytes=8),
            connection_id="conn_1",
            user_id="u1",
            connector_id="example",
            action="post_message",
            status=status,
            categories=["user.name"],
            field_paths=["author.name"],
            dropped=[],
            attempts=[],
            payload_sha256="ab" * 32,
            payload_bytes=10,
            created_at=created,
            actor="test",
        )
        session.add(t)
    return t


def test_export_csv_and_jsonl_with_filters(env, rt, capsys) -> None:
    now = datetime.now(UTC)
    _transfer(rt, status="delivered", created=now - timedelta(hours=2))
    _transfer(rt, status="blocked", created=now - timedelta(hours=1))
    assert main(["audit", "export", "--format", "csv"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("# generated_at: ")  # the report's metadata, then the header
    body = "".join(x for x in out.splitlines(keepends=True) if not x.startswith("#"))
    rows = list(csv.DictReader(io.StringIO(body)))
    assert [r["status"] for r in rows] == ["blocked", "delivered"]
    assert rows[0]["categories"] == "user.name"  # a ;-separated cell, not JSON
    assert main(["audit", "export", "--format", "jsonl", "--status", "delivered"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [json.loads(x)["status"] for x in lines] == ["delivered"]
    since = (now - timedelta(minutes=90)).isoformat()
    assert main(["audit", "export", "--since", since]) == 0
    assert [json.loads(x)["status"] for x in capsys.readouterr().out.splitlines()] == ["blocked"]


def test_reconcile_marks_interrupted_transfers_outcome_unknown(env, rt, capsys) -> None:
    # A pre-engine pending row (no schedule, no lease) older than the cutoff may have
    # reached the third party: it becomes outcome_unknown, never failed or delivered.
    old = _transfer(rt, status="pending", created=datetime.now(UTC) - timedelta(hours=1))
    fresh = _transfer(rt, status="pending", created=datetime.now(UTC))
    assert main(["transfers", "reconcile", "--dry-run"]) == 0
    assert "1 interrupted" in capsys.readouterr().out
    assert main(["transfers", "reconcile"]) == 0
    with Session(rt.engine) as db:
        assert db.get(Transfer, old.id).status == "outcome_unknown"
        assert "may or may not" in db.get(Transfer, old.id).reason
        assert db.get(Transfer, fresh.id).status == "pending"
        last = db.exec(select(AuditRow).order_by(AuditRow.seq.desc())).first()
    assert (last.event, last.transfer_id) == ("transfer.outcome_unknown", old.id)
    assert main(["audit", "verify"]) == 0


def test_keys_rotate_reseals_tokens(env, rt, capsys) -> None:
    with session_scope(rt.engine) as session:
        session.add(Connection(id="conn_k", user_id="u", connector_id="example", status="active"))
        session.flush()
        session.add(
            ConnectionToken(
                connection_id="conn_k",
                key_id=rt.vault.ring.active,
                access_token=rt.vault.seal(
                    "AT-secret", connection_id="conn_k", kind="access_token"
                ),
                refresh_token=rt.vault.seal(
                    "RT-secret", connection_id="conn_k", kind="refresh_token"
                ),
            )
        )
    old_kid = rt.vault.ring.active
    assert main(["keys", "rotate"]) == 0
    assert "re-sealed the tokens of 1 connection" in capsys.readouterr().out
    fresh = build_runtime(env, plugins=[])
    with Session(fresh.engine) as db:
        row = db.get(ConnectionToken, "conn_k")
        last = db.exec(select(AuditRow).order_by(AuditRow.seq.desc())).first()
    assert fresh.vault.ring.active != old_kid
    assert row.key_id == fresh.vault.ring.active
    assert row.access_token.split(".")[1] == fresh.vault.ring.active
    assert fresh.vault.open(row.access_token, connection_id="conn_k", kind="access_token") == (
        "AT-secret"
    )
    assert last.event == "key.rotated"
    # the runtime that was open before the rotation reloads the key file by itself
    assert rt.vault.open(row.refresh_token, connection_id="conn_k", kind="refresh_token") == (
        "RT-secret"
    )
    mode = stat.S_IMODE(os.stat(env.resolved_keys_file).st_mode)
    assert mode == 0o600
    fresh.close()


def test_serve_creates_embedded_home_and_says_so(tmp_path, monkeypatch, capsys) -> None:
    from broker.cli import build_parser
    from broker.cli.serve import build_app

    for name in list(os.environ):
        if name.startswith("BROKER_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    args = build_parser().parse_args(["serve", "--port", "8765"])
    app, settings = build_app(args, demo=False)
    out = capsys.readouterr().out
    home = tmp_path / ".broker"
    assert f"created broker home {home}" in out
    assert f"created token-encryption key file {home / 'keys.json'} (0600)" in out
    assert f"created SQLite database {home / 'broker.db'} (0600)" in out
    for name in ("broker.db", "broker.db-wal", "broker.db-shm"):
        assert stat.S_IMODE(os.stat(home / name).st_mode) == 0o600, name
    assert "http://127.0.0.1:8765" in out
    assert stat.S_IMODE(os.stat(home / "keys.json").st_mode) == 0o600
    assert settings.callback_url == "http://127.0.0.1:8765/oauth/callback"
    app.state.runtime.close()
    # second start: nothing new is created
    build_app(args, demo=False)[0].state.runtime.close()
    assert "created" not in capsys.readouterr().out


def test_configured_database_must_be_upgraded_first(tmp_path, database_url, capsys) -> None:
    settings = Settings(home=tmp_path / "h", database_url=database_url)
    from broker.core.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="broker db upgrade"):
        build_runtime(settings, plugins=[])


def test_list_and_revoke_keys(env, rt, capsys) -> None:
    assert main(["admin", "create-key", "--role", "admin", "--label", "backend"]) == 0
    key = capsys.readouterr().out.strip()
    key_id = authenticate(rt.engine, key).id
    assert main(["admin", "list-keys"]) == 0
    listing = capsys.readouterr().out
    assert key_id in listing and "backend" in listing and key not in listing
    assert main(["admin", "revoke-key", key_id]) == 0
    from broker.core.errors import AuthenticationRequired

    with pytest.raises(AuthenticationRequired):
        authenticate(rt.engine, key)
    assert main(["admin", "revoke-key", "key_nope"]) == 1
    assert "no API key 'key_nope'" in capsys.readouterr().err


def test_bad_setting_is_a_clear_error(monkeypatch, capsys) -> None:
    monkeypatch.setenv("BROKER_PORT", "eighty")
    assert main(["connectors", "list"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: BROKER_PORT:")
    assert "Traceback" not in err


def test_stale_schema_is_refused(tmp_path, database_url) -> None:
    from broker.core.errors import ConfigurationError
    from broker.store.db import create_db_engine

    engine = create_db_engine(database_url)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL)"))
        conn.execute(text("INSERT INTO alembic_version VALUES ('0000')"))
    engine.dispose()
    settings = Settings(home=tmp_path / "h", database_url=database_url)
    with pytest.raises(ConfigurationError, match="is at revision 0000"):
        build_runtime(settings, plugins=[])


def test_connectors_check_and_list_apply_the_data_use_policy(env, tmp_path, monkeypatch, capsys):
    selling = tmp_path / "selling.toml"
    selling.write_text(
        GOOD_MANIFEST.replace(
            'purpose = "Post work item updates to a channel"',
            'purpose = "Post work item updates to a channel"\nuse = "third_party_sharing.sale"',
        ).replace('id = "example"', 'id = "seller"')
    )
    assert main(["connectors", "check", str(selling)]) == 1
    err = capsys.readouterr().err
    assert "declares a data use the policy forbids" in err
    assert "data[0].use: 'third_party_sharing.sale' is forbidden by the data-use policy" in err
    monkeypatch.setenv("BROKER_CONNECTORS_PATH", str(tmp_path))
    assert main(["connectors", "list", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert "seller" not in [c["id"] for c in listed["connectors"]]
    refused = [p for p in listed["problems"] if p["source"].endswith(str(selling))]
    assert [p["message"] for p in refused] == ["declares a forbidden data use"]


def test_audit_cli_explains_what_a_newcomer_gets_wrong(env, rt, tmp_path, capsys) -> None:
    """export-log before any checkpoint says how to sign one; verify-export with a missing
    or malformed file says which (exit 2), never a Python message."""
    _append(rt, 3)
    log = str(tmp_path / "log.jsonl")
    assert main(["audit", "export-log", "-o", log]) == 0
    out = capsys.readouterr().out
    assert "0 checkpoint(s)" in out and "`broker audit checkpoint`" in out
    keyfile = tmp_path / "keys.txt"
    assert main(["audit", "public-key"]) == 0
    keyfile.write_text(capsys.readouterr().out)

    missing = str(tmp_path / "nope.jsonl")
    assert main(["audit", "verify-export", missing, "--public-key", str(keyfile)]) == 2
    assert "No such file or directory" in capsys.readouterr().err
    assert main(["audit", "verify-export", log, "--public-key", "not-a-key-file"]) == 2
    assert "not an Ed25519 verifier key: not-a-key-file" in capsys.readouterr().err
    (tmp_path / "bad.txt").write_text("justonepart\n")
    assert main(["audit", "verify-export", log, "--public-key", str(tmp_path / "bad.txt")]) == 2
    err = capsys.readouterr().err
    assert "not an Ed25519 verifier key: justonepart" in err and "unpack" not in err
    os.remove(log + ".checkpoints")
    assert main(["audit", "verify-export", log, "--public-key", str(keyfile)]) == 2
    err = capsys.readouterr().err
    assert "No such file" in err and "log.jsonl.checkpoints" in err


def test_output_into_a_closed_pipe_exits_quietly(env, rt, tmp_path) -> None:
    """`broker audit verify | head`: once the reader has gone, no traceback."""
    import subprocess
    import sys

    _append(rt, 30)
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader left before the first line: every write is EPIPE
    cmd = [sys.executable, "-m", "broker.cli", "audit", "verify"]
    try:
        done = subprocess.run(  # noqa: S603 - our own interpreter and module
            cmd, stdout=write_end, stderr=subprocess.PIPE, env=os.environ.copy(), check=False
        )
    finally:
        os.close(write_end)
    assert b"Traceback" not in done.stderr and b"BrokenPipe" not in done.stderr, done.stderr
    assert done.returncode == 0
